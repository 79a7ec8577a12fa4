"""The web viewer's Content-Security-Policy, shared by the local stack and CloudFront.

The viewer (viewer/, built with Vite) loads only its own scripts, styles and fonts. cornerstone3D
decodes images in module workers loaded from the viewer's origin, compiles WebAssembly codecs,
which needs 'wasm-unsafe-eval' but not 'unsafe-eval', and shows thumbnails and worker code
through blob: URLs. The viewer calls DICOMweb, and on AWS Cognito, with fetch, so connect-src
names those origins.
"""

from __future__ import annotations

from collections.abc import Sequence


def content_security_policy(
    connect_sources: Sequence[str] = (), *, upgrade_insecure_requests: bool = False
) -> str:
    """Return the viewer's Content-Security-Policy, with ``connect_sources`` after 'self'.

    ``upgrade_insecure_requests`` adds the directive of that name, for a site served over
    HTTPS only.
    """
    connect = " ".join(["'self'", *connect_sources])
    directives = [
        "default-src 'self'",
        "script-src 'self' 'wasm-unsafe-eval'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "font-src 'self'",
        "worker-src 'self' blob:",
        f"connect-src {connect}",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
    if upgrade_insecure_requests:
        directives.append("upgrade-insecure-requests")
    return "; ".join(directives)
