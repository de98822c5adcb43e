import siogate


def test_public_surface_is_locked() -> None:
    assert sorted(siogate.__all__) == [
        "ApiError",
        "AsyncClient",
        "AuthError",
        "Client",
        "ConfigError",
        "Gateway",
        "HandlerSocket",
        "PayloadTooLarge",
        "ProtocolError",
        "Refuse",
        "RequestError",
        "RequestTimeout",
        "Settings",
        "SiogateError",
        "WebhookError",
        "__version__",
        "build",
        "verify_webhook",
    ]
    for name in siogate.__all__:
        assert hasattr(siogate, name), name
