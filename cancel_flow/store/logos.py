"""Logos uploaded on the brand settings page, kept in the database by the SHA-256 of their bytes (so every
replica serves the same one, and a configuration version names it as `upload:<sha256>`).

What is accepted is decided by the bytes, never by the file's name or the browser's content type: PNG,
JPEG and WebP by their signatures, at most MAX_LOGO_BYTES. SVG is refused: it is a document that can carry
scripts and outside references, and a raster logo shows the same on every page and in every email."""

import hashlib
import re
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cancel_flow.clock import utc_now
from cancel_flow.models import BrandLogo

logos = BrandLogo.__table__
MAX_LOGO_BYTES = 512 * 1024
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class LogoRefused(ValueError):
    """The file can't be a logo; the message says why, in words for the coach."""


@dataclass(frozen=True)
class StoredLogo:
    sha256: str
    content_type: str
    data: bytes


def logo_type(data: bytes) -> str:
    """The logo's content type read from its first bytes; LogoRefused when it isn't a PNG, JPEG or WebP
    of at most MAX_LOGO_BYTES."""
    if not data:
        raise LogoRefused("Choose an image file for the logo: the file sent was empty.")
    if len(data) > MAX_LOGO_BYTES:
        raise LogoRefused(f"The logo is {len(data) / 1024:.0f} KB; at most {MAX_LOGO_BYTES // 1024} KB is accepted. "
                          "Save it smaller (a logo 512 pixels wide is plenty).")
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    head = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith((b"<svg", b"<?xml", b"<!doctype svg")) or b"<svg" in head:
        raise LogoRefused("SVG logos are not accepted: an SVG file can carry scripts. Export the logo as a PNG "
                          "(or JPEG or WebP) and upload that.")
    raise LogoRefused("That file is not a PNG, JPEG or WebP image (whatever its name says). Export the logo in "
                      "one of those formats and upload it again.")


def is_sha256(text: str) -> bool:
    return bool(_SHA256.match(text))


class LogoStore:
    def __init__(self, engine: Engine):
        self.engine = engine

    def save(self, data: bytes, uploaded_by: str) -> str:
        """Keep the logo (checked by `logo_type`) and return its SHA-256; the same bytes uploaded again are kept once."""
        content_type = logo_type(data)
        sha = hashlib.sha256(data).hexdigest()
        with self.engine.begin() as connection:
            if connection.execute(sa.select(logos.c.sha256).where(logos.c.sha256 == sha)).first() is not None:
                return sha
            try:
                with connection.begin_nested():
                    connection.execute(sa.insert(logos).values(sha256=sha, content_type=content_type, data=data,
                                                               uploaded_at=utc_now(), uploaded_by=uploaded_by[:320]))
            except sa.exc.IntegrityError:  # the same bytes, uploaded at the same moment elsewhere
                pass
        return sha

    def get(self, sha: str) -> StoredLogo | None:
        if not is_sha256(sha):
            return None
        with self.engine.connect() as connection:
            row = connection.execute(sa.select(logos.c.content_type, logos.c.data).where(logos.c.sha256 == sha)).first()
        return StoredLogo(sha, row.content_type, bytes(row.data)) if row else None

    def exists(self, sha: str) -> bool:
        if not is_sha256(sha):
            return False
        with self.engine.connect() as connection:
            return connection.execute(sa.select(logos.c.sha256).where(logos.c.sha256 == sha)).first() is not None
