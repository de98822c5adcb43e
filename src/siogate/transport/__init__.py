"""asyncio I/O: the HTTP/1.1 server, Engine.IO long-polling and WebSocket transports."""
