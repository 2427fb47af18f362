"""The console's pages and their assets.

Every page is a static HTML file (`static/pages/NAME.html`) that loads its ES module; the
module fetches what it shows from the API. `/signin` and `/static/...` (the stylesheet and the
modules the sign-in page needs) are public; every other page and `/assets/...` need a session:
a page answers 303 to `/signin?next=...`, an asset 401.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from .auth import find_principal
from .errors import ApiError
from .state import ConsoleState, get_state

STATIC = Path(__file__).parent / "static"
PUBLIC = STATIC / "public"
APP = STATIC / "app"
PAGES = STATIC / "pages"

#: URL -> page file. `{serial}` pages get the same file; their module reads the path.
ROUTES: dict[str, str] = {
    "/": "board", "/line": "line", "/units": "units", "/units/{serial}": "unit",
    "/recall": "recall", "/spc": "spc", "/holds": "holds", "/checkpoints": "checkpoints",
    "/audit": "audit", "/account": "account",
}
_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml",
          ".png": "image/png", ".woff2": "font/woff2", ".html": "text/html"}

router = APIRouter(include_in_schema=False)


def _file(folder: Path, path: str) -> FileResponse:
    # no resolve(): the editable install links each file elsewhere; ".." is refused instead
    target = folder / path
    if ".." in Path(path).parts or path.startswith("/") or not target.is_file():
        raise ApiError(404, "not_found", f"no asset {path}")
    return FileResponse(target, media_type=_TYPES.get(target.suffix, "application/octet-stream"),
                        headers={"Cache-Control": "no-cache"})


@router.get("/signin")
async def signin_page() -> FileResponse:
    return FileResponse(PAGES / "signin.html", media_type="text/html")


@router.get("/static/{path:path}")
async def public_asset(path: str) -> FileResponse:
    return _file(PUBLIC, path)


@router.get("/assets/{path:path}")
async def app_asset(path: str, request: Request,
                    state: ConsoleState = Depends(get_state)) -> FileResponse:
    if await find_principal(request, state) is None:
        raise ApiError(401, "auth.required", "sign in first (/signin)")
    return _file(APP, path)


def _page(name: str):  # type: ignore[no-untyped-def]
    async def page(request: Request, state: ConsoleState = Depends(get_state)) -> Response:
        if await find_principal(request, state) is None:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/signin?next={quote(target, safe='')}", status_code=303)
        return FileResponse(PAGES / f"{name}.html", media_type="text/html")

    page.__name__ = f"page_{name}"
    return page


for _url, _name in ROUTES.items():
    router.add_api_route(_url, _page(_name), methods=["GET"])
