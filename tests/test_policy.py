"""Per-part decisions from the headers alone: allowed or not, under which name, where."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.requests import Request

from filestore_fastapi import Config, PayloadTooLarge, UnsupportedMediaType, UploadContext, ValidationFailed
from filestore_fastapi.policy import (
    check_complete,
    check_count,
    check_part,
    check_size,
    content_type_allowed,
    target_destination,
    target_name,
)


def context(
    filename: str = "report.pdf",
    content_type: str = "application/pdf",
    form: dict[str, str] | None = None,
    field_name: str = "document",
) -> UploadContext:
    request = Request({"type": "http", "method": "POST", "path": "/upload", "headers": []})
    return UploadContext(request, field_name, filename, content_type, form or {})


@pytest.mark.parametrize("allowed", [["pdf"], [".pdf"], ["PDF"], [".Pdf", "txt"], "pdf"])
@pytest.mark.parametrize("filename", ["report.pdf", "REPORT.PDF", "a.b.Pdf", "../../dir/report.pdf"])
async def test_allowed_extensions_are_case_insensitive_with_or_without_dot(
    allowed: Any, filename: str
) -> None:
    await check_part(Config(allowed_extensions=allowed), context(filename))


@pytest.mark.parametrize(
    ("filename", "shown"),
    [
        ("run.exe", "'.exe'"),
        ("README", "'(none)'"),
        ("report.pdf.exe", "'.exe'"),
        ("report.pdf\x00.exe", "'.exe'"),
    ],
)
async def test_other_extensions_are_415_naming_field_and_allowed(filename: str, shown: str) -> None:
    with pytest.raises(UnsupportedMediaType) as caught:
        await check_part(Config(allowed_extensions=["pdf", "txt"]), context(filename))
    error = caught.value
    assert error.status_code == 415
    assert error.detail == [
        {"loc": ["body", "document"], "msg": error.message, "type": "unsupported_media_type"}
    ]
    assert error.message.startswith("document:")
    assert shown in error.message
    assert ".pdf, .txt" in error.message


@pytest.mark.parametrize(
    ("filename", "ok"), [("backup.TAR.GZ", True), ("backup.gz", False), ("b.tar.gz.exe", False)]
)
async def test_a_multi_dot_extension_can_be_allowed(filename: str, ok: bool) -> None:
    config = Config(allowed_extensions=["tar.gz", ".zip"])
    if ok:
        await check_part(config, context(filename))
    else:
        with pytest.raises(UnsupportedMediaType):
            await check_part(config, context(filename))


@pytest.mark.parametrize(
    ("content_type", "ok"),
    [
        ("image/png", True),
        ("image/svg+xml", True),
        ("application/pdf", True),
        ("application/pdf+zip", False),
        ("text/plain", False),
        ("imagex/png", False),
        ("application/octet-stream", False),
        ("image/png; charset=binary", True),  # parameters are not part of the media type
        ("application/pdf;version=1.7", True),
        ("text/plain; x=image/png", False),
    ],
)
async def test_allowed_content_types_exact_or_wildcard(content_type: str, ok: bool) -> None:
    config = Config(allowed_content_types=["image/*", "Application/PDF"])
    assert content_type_allowed(content_type, config.allowed_content_types or ()) is ok
    if ok:
        await check_part(config, context(content_type=content_type))
    else:
        with pytest.raises(
            UnsupportedMediaType, match=r"document: content type .* not allowed \(allowed: image/\*"
        ):
            await check_part(config, context(content_type=content_type))


async def test_no_restrictions_accept_anything() -> None:
    await check_part(Config(), context("anything.exe", "application/x-msdownload"))


def sync_accept(ctx: UploadContext) -> bool:
    return True


async def async_accept(ctx: UploadContext) -> bool:
    return True


def sync_reject(ctx: UploadContext) -> bool:
    return False


async def async_message(ctx: UploadContext) -> str:
    return f"{ctx.filename} is not welcome"


@pytest.mark.parametrize("filters", [sync_accept, async_accept, [sync_accept, async_accept], (async_accept,)])
async def test_filters_returning_true_accept(filters: Any) -> None:
    await check_part(Config(filters=filters), context())


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        (sync_reject, "document: rejected by a filter"),
        ([sync_accept, async_message], "document: report.pdf is not welcome"),
        (lambda ctx: None, "document: rejected by a filter"),  # forgetting to return True rejects
        (lambda ctx: "", "document: rejected by a filter"),
        (lambda ctx: 1, "document: rejected by a filter"),  # only True itself accepts
    ],
)
async def test_filters_returning_false_or_a_message_reject_with_422(filters: Any, message: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        await check_part(Config(filters=filters), context())
    assert caught.value.status_code == 422
    assert caught.value.message == message
    assert caught.value.detail[0]["loc"] == ["body", "document"]


async def test_filters_run_in_order_and_stop_at_the_first_refusal() -> None:
    calls: list[str] = []

    def first(ctx: UploadContext) -> bool:
        calls.append("first")
        return False

    def second(ctx: UploadContext) -> bool:
        calls.append("second")
        return True

    with pytest.raises(ValidationFailed):
        await check_part(Config(filters=[first, second]), context())
    assert calls == ["first"]


async def test_extension_is_checked_before_filters_run() -> None:
    calls: list[UploadContext] = []
    with pytest.raises(UnsupportedMediaType):
        await check_part(Config(allowed_extensions=["pdf"], filters=calls.append), context("x.exe"))
    assert calls == []


async def test_hooks_receive_the_context() -> None:
    seen: list[UploadContext] = []

    async def spy(ctx: UploadContext) -> bool:
        seen.append(ctx)
        return True

    given = context("a b.PDF", "application/pdf", {"user": "alice"}, field_name="attachment")
    await check_part(Config(filters=spy), given)
    assert seen == [given]
    assert (seen[0].field_name, seen[0].filename, seen[0].form["user"]) == ("attachment", "a b.PDF", "alice")
    assert seen[0].request.url.path == "/upload"


async def test_target_name_is_the_sanitised_client_name() -> None:
    assert await target_name(Config(), context("../../etc/passwd")) == "passwd"


async def test_filename_hook_sync_and_async_is_sanitised_too() -> None:
    def by_user(ctx: UploadContext) -> str:
        return f"{ctx.form['user']}-{ctx.filename}"

    async def traversal(ctx: UploadContext) -> str:
        return "../../outside.txt"

    assert (
        await target_name(Config(filename=by_user), context("cv.pdf", form={"user": "bob"})) == "bob-cv.pdf"
    )
    assert await target_name(Config(filename=traversal), context()) == "outside.txt"


async def test_without_sanitising_safe_names_pass_unchanged_and_unsafe_ones_are_422() -> None:
    config = Config(sanitize_filename=False)
    assert await target_name(config, context("Report_v2.pdf")) == "Report_v2.pdf"
    # A space or a bracket is replaced when sanitising, so as given it is not safe either.
    for unsafe in ("../x.pdf", "a/b.pdf", ".hidden", "x\x00.pdf", "Report (v2).pdf"):
        with pytest.raises(ValidationFailed, match=r"document: .* not safe"):
            await target_name(config, context(unsafe))


async def test_destination_from_config_or_a_sync_or_async_hook() -> None:
    async def per_user(ctx: UploadContext) -> str:
        return f"uploads/{ctx.form['user']}"

    assert await target_destination(Config(destination="uploads/docs"), context()) == "uploads/docs"
    with_form = context(form={"user": "carol"})
    assert await target_destination(Config(destination=per_user), with_form) == "uploads/carol"
    assert await target_destination(Config(destination=lambda ctx: ctx.field_name), with_form) == "document"


def test_the_byte_and_end_moments_judge_a_file_without_a_body() -> None:
    # What a resumable or direct upload will call: no multipart body, no request.
    config = Config(max_file_size=10, min_file_size=2)
    check_size(config, "doc", 10)
    with pytest.raises(PayloadTooLarge, match=r"doc: file exceeds max_file_size of 10 bytes"):
        check_size(config, "doc", 11)
    check_complete(config, "doc", 2)
    with pytest.raises(ValidationFailed, match=r"doc: file is smaller than min_file_size of 2 bytes"):
        check_complete(config, "doc", 1)
    check_count("doc", 3, 3)
    with pytest.raises(ValidationFailed, match=r"doc: more than count=3 files"):
        check_count("doc", 4, 3)
