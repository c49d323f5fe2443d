"""The ``[table]`` section: where the inference tables live and how to reach them."""

from __future__ import annotations

from pydantic import Field, field_validator

from gateway.domain.validation import Section

PREDICTIONS, FEEDBACK = "predictions", "feedback"


class TableSection(Section):
    """With ``enabled`` (window granularity only), each window's rows go to ``<uri>/predictions`` and
    its MLflow run keeps the summary, a dataset input naming the table and its version, and no copy of
    the rows. ``uri``: a local directory, or ``s3://bucket/prefix`` (with ``storage_options``: delta-rs's
    object store keys, e.g. AWS_ENDPOINT_URL, AWS_REGION; credentials from the environment)."""

    enabled: bool = False
    uri: str = Field("./var/table", min_length=1)
    storage_options: dict[str, str] = Field(default_factory=dict)

    @field_validator("uri")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        scheme = value.partition("://")[0] if "://" in value else ""
        if scheme not in ("", "file", "s3", "s3a"):
            raise ValueError(f"must be a local path, file:// or s3:// URI, not {scheme}://")
        return value.rstrip("/")

    def table_uri(self, name: str) -> str:
        return f"{self.uri}/{name}"
