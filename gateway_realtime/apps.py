import importlib.util

from django.apps import AppConfig
from django.core import checks
from django.utils.translation import gettext_lazy as _


class GatewayRealtimeConfig(AppConfig):
    name = "gateway_realtime"
    verbose_name = _("AI Gateway realtime")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from gateway_realtime.checks import (
            check_breaker_cache,
            check_credential,
            check_relay_channel_layer,
            check_settings,
        )

        checks.register(check_settings, checks.Tags.security)
        checks.register(check_credential, checks.Tags.security, deploy=True)
        checks.register(check_breaker_cache, checks.Tags.caches, deploy=True)
        checks.register(check_relay_channel_layer)

        # Prometheus metrics where prometheus-client is installed (docs/metrics.md).
        from gateway_realtime import metrics

        metrics.connect()

        # The OpenAPI description of the endpoints where drf-spectacular is installed.
        if importlib.util.find_spec("drf_spectacular") is not None:
            import gateway_realtime.openapi  # noqa: F401  (registers its view extension)

        # Relay mode is an optional extra: end a user's relayed sessions on
        # logout, deactivation and a password change only where it is in use
        # (revocation.relay_in_use: Channels and the relay's channel layer).
        # override_settings of those settings (tests) reconnects them.
        if importlib.util.find_spec("channels") is not None:
            from django.core.signals import setting_changed

            from gateway_realtime.relay.revocation import relay_settings_changed, update_receivers

            update_receivers()
            setting_changed.connect(
                relay_settings_changed, dispatch_uid="gateway_realtime.relay.settings"
            )
