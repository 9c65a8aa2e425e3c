"""Telemetry: metrics, structured logs and usage records, fed by one record per request."""

from modelgarden.telemetry.meter import Meter
from modelgarden.telemetry.record import RequestRecord
from modelgarden.telemetry.service import Telemetry

__all__ = ["Meter", "RequestRecord", "Telemetry"]
