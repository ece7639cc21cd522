"""OpenTelemetry entry points, the way vendor distributions register themselves.

``opentelemetry-instrument`` (and anything else that calls the auto-instrumentation
``initialize()``) loads the ``opentelemetry_distro`` and ``opentelemetry_configurator``
entry points: ours set the defaults we rely on and run our bootstrap, so a team already
launching with ``opentelemetry-instrument`` gets the same pipeline and insight.
"""

from __future__ import annotations

import os
from typing import Any

from opentelemetry.instrumentation.distro import BaseDistro  # type: ignore[attr-defined]
from opentelemetry.sdk._configuration import _BaseConfigurator


class OtelPerfDistro(BaseDistro):  # type: ignore[misc]
    """Sets defaults before instrumentors load; skips the official ones ours replace."""

    def _configure(self, **kwargs: Any) -> None:
        from otel_perf._cli.launcher import SANITIZE_ENV, sanitize_fields

        # Stable HTTP/DB semantic conventions for the contrib instrumentations we use, and
        # sensitive headers never exported even when header capture is turned on.
        os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http,database")
        os.environ[SANITIZE_ENV] = sanitize_fields(dict(os.environ))
        # opentelemetry-instrument runs *every* installed configurator unless this names one:
        # with the official distro installed too, there would be two pipelines.
        os.environ.setdefault("OTEL_PYTHON_CONFIGURATOR", "otel_perf")

    def load_instrumentor(self, entry_point: Any, **kwargs: Any) -> None:
        """Load an official instrumentation unless a row of ours instruments its library."""
        from otel_perf._setup import integrations

        disabled = integrations.disabled_names(
            os.environ.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "").split(",")
        )
        status = integrations.official_decision(entry_point, disabled, integrations.replaced_names(disabled))
        if status.state == "replaced":
            integrations.note(status)
            return
        super().load_instrumentor(entry_point, **kwargs)
        status.state = "active"
        integrations.note(status)


class OtelPerfConfigurator(_BaseConfigurator):
    """Builds the SDK pipeline and installs our instrumentation."""

    def _configure(self, **kwargs: Any) -> None:
        from otel_perf._setup.install import bootstrap

        # opentelemetry-instrument loads the official instrumentations itself, through
        # OtelPerfDistro.load_instrumentor, right after the configurators.
        bootstrap(load_official=False)
