import siogate


def test_public_surface_is_locked() -> None:
    assert sorted(siogate.__all__) == [
        "ApiError",
        "AuthError",
        "ConfigError",
        "Gateway",
        "HandlerSocket",
        "PayloadTooLarge",
        "ProtocolError",
        "Refuse",
        "Settings",
        "SiogateError",
        "WebhookError",
        "__version__",
        "build",
    ]
    for name in siogate.__all__:
        assert hasattr(siogate, name), name
