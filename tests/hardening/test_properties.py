"""Item 3: for any form, cut into any chunks, what the dependency stores is what Starlette's
own ``MultiPartParser`` reads from the same body: the same files with the same bytes in
the same order, and the same text fields."""

import hashlib
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.datastructures import FormData, Headers, ImmutableMultiDict, UploadFile
from starlette.formparsers import MultiPartParser

from filestore_fastapi import Config, FileData, LocalStorage, MemoryStorage, form_fields

from .support import asgi_post, cut

BOUNDARY_CHARS = "abcXYZ0189'()+_,-./:=?"
SAFE_NAME = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8)
# Anything a browser can put between the quotes: it escapes only ", CR and LF.
FILENAME = st.text(alphabet=st.characters(codec="utf-8", exclude_characters='"\\\r\n\x00'), max_size=24)


@st.composite
def forms(draw: st.DrawFn) -> tuple[str, bytes]:
    """A valid multipart body whose contents are dense with near-boundaries."""
    boundary = draw(st.text(alphabet=BOUNDARY_CHARS, min_size=1, max_size=70))
    delimiter = b"\r\n--" + boundary.encode()
    near = [delimiter[:n] for n in range(1, len(delimiter))] + [b"--" + boundary.encode(), b"\r\n\r\n", b"--"]
    content = st.lists(st.one_of(st.binary(max_size=40), st.sampled_from(near)), max_size=8).map(b"".join)
    parts: list[bytes] = []
    for _ in range(draw(st.integers(0, 7))):
        value = draw(content.filter(lambda v: delimiter not in b"\r\n" + v + b"\r\n"))
        kind = draw(st.sampled_from(["text", "file", "doc", "undeclared", "empty-name"]))
        if kind == "text":
            head = f'Content-Disposition: form-data; name="{draw(SAFE_NAME)}"\r\n'.encode()
        else:
            field = {"file": "file", "doc": "doc", "undeclared": "other", "empty-name": "file"}[kind]
            filename = "" if kind == "empty-name" else draw(FILENAME)
            head = f'Content-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'.encode()
            head += f"Content-Type: {draw(st.sampled_from(['image/png', 'text/plain']))}\r\n".encode()
        parts.append(head + b"\r\n" + value)
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + part + b"\r\n" for part in parts)
    return boundary, body + b"--" + boundary.encode() + b"--\r\n"


async def starlette_reads(boundary: str, body: bytes) -> tuple[list[tuple[str, str]], dict[str, list[Any]]]:
    async def stream() -> Any:
        yield body

    headers = Headers({"content-type": f'multipart/form-data; boundary="{boundary}"'})
    form: FormData = await MultiPartParser(headers, stream()).parse()
    fields: list[tuple[str, str]] = []
    files: dict[str, list[Any]] = {"file": [], "doc": []}
    for name, value in form.multi_items():
        if isinstance(value, UploadFile):
            data = await value.read()
            if name in files and value.filename:  # an empty file input sends filename=""
                files[name].append((value.filename, data))
        else:
            fields.append((name, value))
    return fields, files


def app_for(directory: Path) -> tuple[FastAPI, dict[str, Any]]:
    memory = MemoryStorage("file", count=50, required=False)
    # A tiny chunk_size makes LocalStorage flush (writev) on nearly every event.
    local = LocalStorage("doc", count=50, required=False, config=Config(destination=directory, chunk_size=5))
    seen: dict[str, Any] = {}
    app = FastAPI()

    @app.post("/upload")
    async def upload(
        files: Annotated[list[FileData], Depends(memory)],
        docs: Annotated[list[FileData], Depends(local)],
        fields: Annotated[ImmutableMultiDict[str, str], Depends(form_fields)],
    ) -> None:
        seen["file"], seen["doc"], seen["fields"] = files, docs, list(fields.multi_items())

    return app, seen


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(form=forms(), data=st.data())
async def test_stored_equals_what_starlette_reads(form: tuple[str, bytes], data: st.DataObject) -> None:
    boundary, body = form
    points = data.draw(st.lists(st.integers(0, len(body)), max_size=12), label="cut points")
    with tempfile.TemporaryDirectory() as directory:
        app, seen = app_for(Path(directory))

        reply = await asgi_post(app, cut(body, points), ctype=f'multipart/form-data; boundary="{boundary}"')

        assert reply.status == 200, reply.body
        fields, files = await starlette_reads(boundary, body)
        assert seen["fields"] == fields
        assert [(f.original_filename, f.file) for f in seen["file"]] == files["file"]
        assert [(f.original_filename, Path(f.path).read_bytes()) for f in seen["doc"]] == files["doc"]
        for stored, (_, content) in zip(
            seen["file"] + seen["doc"], files["file"] + files["doc"], strict=True
        ):
            assert stored.size == len(content)
            assert stored.sha256 == hashlib.sha256(content).hexdigest()
