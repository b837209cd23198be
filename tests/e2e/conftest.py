"""Every response of a real server in these tests is checked against its OpenAPI document."""

from documented import documented_responses

__all__ = ["documented_responses"]
