"""What the board's driver tells its client. Kept light: the client imports it."""

from pydantic import BaseModel, Field


class BoardTiming(BaseModel):
    """How this bench power-cycles, from the exporter config: the client's workflow follows it."""

    off_seconds: float = Field(ge=0)
    ready_timeout: float = Field(gt=0)
