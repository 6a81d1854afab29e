"""Imaging in a browser (issue 7): a township doctor uploads a generated CT series through the
upload screen and sees every file indexed and the study linked to the person; the county
radiologist opens it from the worklist, scrolls through the images, switches to the lung
window and signs a report; a 云胶片 share link with an access code, opened in a fresh browser
with nobody signed in, shows the thumbnails, the images and the signed report."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import requests
from playwright.sync_api import Page, expect

from tests.browser.ui import fits_width, menu, sign_in
from tests.support import dicom_factory

SLICES = 8
LOCAL_NUMBER = "QT-IMG-0420"  # 桥头镇卫生院's own patient number, as the CT writes it
NAME = "欧阳云片"
FINDINGS = "两肺纹理清晰，右肺上叶见一直径约6mm磨玻璃结节，边界清楚。纵隔未见肿大淋巴结。"
IMPRESSION = "右肺上叶磨玻璃小结节，建议随访。"
CODE = "4321"


def _call(site: Any, method: str, path: str, token: str, **kw: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"}
    return requests.request(method, site.stack.api_url + path, headers=headers, timeout=30, **kw)


def _registered_person(site: Any) -> dict[str, Any]:
    """A person registered at 桥头镇卫生院 with its local patient number."""
    township = site.token("doctor", "doc-wangfang", institution_id="qiaotou", name="王芳")
    registration = {
        "name": NAME, "sex": "male", "birth_date": "1958-03-12",
        "phone": "13900007070", "address": "示范县桥头镇东街3号",
        "identifiers": [{"type": "local", "value": LOCAL_NUMBER, "assigner": "qiaotou"}],
    }  # fmt: skip
    created = _call(site, "POST", "/persons", township, json=registration)
    assert created.status_code in (200, 201), created.text
    return created.json()["person"]


def _ct_files(folder: Path) -> list[Path]:
    series = dicom_factory.ct_series(
        n=SLICES, rows=128, cols=128, patient_id=LOCAL_NUMBER, patient_name=NAME,
        sex="M", birth_date="19580312",
    )  # fmt: skip
    paths = []
    for i, data in enumerate(series, start=1):
        path = folder / f"CT{i:04d}.dcm"
        path.write_bytes(data)
        paths.append(path)
    return paths


def _loaded(locator: Any) -> bool:
    return bool(locator.evaluate("img => img.complete && img.naturalWidth > 0"))


def test_upload_report_and_share_a_ct_series(
    page: Page, console, site, shot, new_context, tmp_path: Path
):
    person = _registered_person(site)
    files = _ct_files(tmp_path)

    # --- the township doctor uploads the series through the upload screen
    sign_in(page, "wangfang")
    menu(page).get_by_text("影像", exact=True).click()
    menu(page).get_by_text("上传影像").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("上传影像")
    page.get_by_test_id("upload-input").set_input_files([str(f) for f in files])
    expect(page.get_by_text(f"已选 {SLICES} 个文件")).to_be_visible()
    page.get_by_test_id("upload-start").click()
    indexed = page.locator('[data-testid="file-status"][data-status="indexed"]')
    expect(indexed).to_have_count(SLICES, timeout=60_000)
    expect(page.get_by_test_id("count-indexed")).to_have_text(f"已入库 {SLICES}")
    expect(page.get_by_test_id("upload-settled")).to_be_visible()
    expect(page.get_by_test_id("upload-study")).to_have_count(1)
    assert fits_width(page)
    shot("70-imaging-upload")

    # --- the study is listed, linked to the person (no 待关联), not yet reported
    menu(page).get_by_text("影像检查").click()
    table = page.get_by_test_id("study-table")
    row = table.get_by_role("row", name=re.compile(NAME))
    expect(row).to_contain_text("胸部CT平扫")
    expect(row).to_contain_text(f"1 序列 / {SLICES} 幅")
    expect(row).to_contain_text("未报告")
    expect(row.get_by_test_id("study-unlinked")).to_have_count(0)
    shot("71-imaging-worklist")

    # --- the county radiologist: the imaging centre's worklist over every institution
    rad = new_context().new_page()
    console.watch(rad)
    sign_in(rad, "huangtao")
    menu(rad).get_by_text("影像", exact=True).click()
    menu(rad).get_by_text("影像检查").click()
    expect(rad.get_by_test_id("filter-institution")).to_contain_text("全部机构")
    rad.get_by_test_id("filter-unreported").click()
    worklist = rad.get_by_test_id("study-table").get_by_role("row", name=re.compile(NAME))
    expect(worklist).to_contain_text("桥头镇卫生院")
    rad.get_by_test_id("filter-institution").click()  # or one institution's
    rad.get_by_role("option", name="桥头镇卫生院").click()
    expect(worklist).to_contain_text("未报告")
    worklist.get_by_test_id("study-link").click()
    expect(rad).to_have_url(re.compile(r"/imaging/studies/[\d.]+$"))
    expect(rad.get_by_test_id("study-title")).to_contain_text(NAME)
    expect(rad.get_by_test_id("study-header")).to_contain_text("桥头镇卫生院")

    # the viewer: thumbnail, first image, scrolled by the wheel and the keyboard
    expect(rad.get_by_test_id("thumbnail-img")).to_have_count(1)
    assert _loaded(rad.get_by_test_id("thumbnail-img"))
    image = rad.get_by_test_id("viewer-image")
    counter = rad.get_by_test_id("instance-counter")
    expect(counter).to_have_text(f"1 / {SLICES}")
    expect(image).to_have_attribute("data-window", "default")
    first = image.get_attribute("data-sop")
    stage = rad.get_by_test_id("viewer-stage")
    stage.hover()
    rad.mouse.wheel(0, 120)
    expect(counter).to_have_text(f"2 / {SLICES}")
    expect(image).not_to_have_attribute("data-sop", first or "")
    stage.click()
    rad.keyboard.press("ArrowDown")
    expect(counter).to_have_text(f"3 / {SLICES}")
    assert _loaded(image)

    # 肺窗, and zoom
    rad.get_by_test_id("window-lung").click()
    expect(image).to_have_attribute("data-window", "lung")
    assert _loaded(image)
    rad.get_by_test_id("zoom-in").click()
    expect(rad.get_by_test_id("zoom-reset")).to_have_text("125%")
    expect(image).to_have_attribute("style", re.compile(r"scale\(1\.25\)"))
    shot("72-imaging-viewer-lung", rad)
    rad.get_by_test_id("zoom-reset").click()
    expect(image).to_have_attribute("style", re.compile(r"scale\(1\)"))

    # --- a final report
    form = rad.get_by_test_id("report-form")
    form.get_by_test_id("report-technique-input").fill("胸部CT平扫，层厚1.25mm")
    form.get_by_test_id("report-findings-input").fill(FINDINGS)
    form.get_by_test_id("report-impression-input").fill(IMPRESSION)
    form.get_by_test_id("report-recommendation-input").fill("6个月后复查胸部CT")
    form.get_by_test_id("report-submit").click()
    report = rad.get_by_test_id("report-view")
    expect(report.get_by_test_id("report-status")).to_have_text("已签发")
    expect(report.get_by_test_id("report-signed")).to_contain_text("黄涛")
    expect(report.get_by_test_id("report-impression")).to_have_text(IMPRESSION)
    expect(rad.get_by_test_id("study-report-status")).to_have_text("已签发")

    # --- a share link with an access code, and its QR code
    rad.locator('[data-testid="share-days"] input').fill("3")
    rad.get_by_test_id("share-code").fill(CODE)
    rad.get_by_test_id("share-label").fill("转诊至市医院")
    rad.get_by_test_id("share-create").click()
    expect(rad.get_by_test_id("share-created")).to_be_visible()
    assert _loaded(rad.get_by_test_id("share-qr"))
    url = rad.get_by_test_id("share-url").input_value()
    assert re.fullmatch(re.escape(site.url.rstrip("/")) + r"/film/[\w-]+", url), url
    expect(rad.get_by_test_id("share-list")).to_contain_text("转诊至市医院")
    assert fits_width(rad)
    rad.get_by_test_id("share-created").scroll_into_view_if_needed()
    shot("73-imaging-report-share", rad)

    # --- the link in a fresh browser: nobody signed in; the access code asked for
    console.allow_http(403)  # the first opening, without the code, is refused on purpose
    film = new_context().new_page()
    console.watch(film)
    film.goto(url)
    expect(film.get_by_test_id("film-code")).to_be_visible()
    film.get_by_test_id("film-code-input").fill("0000")
    film.get_by_test_id("film-code-submit").click()
    expect(film.get_by_test_id("film-code-wrong")).to_be_visible()
    film.get_by_test_id("film-code-input").fill(CODE)
    film.get_by_test_id("film-code-submit").click()
    study = film.get_by_test_id("film-study")
    expect(study).to_contain_text("胸部CT平扫")
    expect(study).to_contain_text("欧***")  # the name masked
    expect(study).not_to_contain_text(NAME)
    thumbs = film.get_by_test_id("thumbnail-img")
    expect(thumbs).to_have_count(1)
    assert _loaded(thumbs.first)
    film_image = film.get_by_test_id("viewer-image")
    expect(film_image).to_be_visible()
    assert _loaded(film_image)
    film.get_by_test_id("instance-next").click()
    expect(film.get_by_test_id("instance-counter")).to_have_text(f"2 / {SLICES}")
    film.get_by_test_id("window-lung").click()
    expect(film_image).to_have_attribute("data-window", "lung")
    assert _loaded(film_image)
    film_report = film.get_by_test_id("report-view")
    expect(film_report.get_by_test_id("report-findings")).to_have_text(FINDINGS)
    expect(film_report.get_by_test_id("report-signed")).to_contain_text("黄涛")
    assert fits_width(film)
    shot("74-imaging-film", film)

    # --- revoked by the radiologist: the same link now says so plainly
    rad.get_by_test_id("share-list").get_by_role("button", name="撤销").click()
    rad.get_by_role("button", name="确认").click()
    expect(rad.get_by_test_id("share-list")).to_contain_text("已撤销")
    rad.close()
    console.allow_http(410)
    film.reload()
    gone = film.get_by_test_id("film-error")
    expect(gone).to_contain_text("此分享链接已被撤销")
    expect(gone.get_by_test_id("error-code")).to_have_text("SHARE_REVOKED")
    expect(film.get_by_test_id("film-study")).to_have_count(0)
    film.close()

    # --- the person's record lists the study among their imaging (record-access rules:
    # registering a person is no care relationship, so this read is a break-glass one)
    page.goto(f"/records/persons/{person['person_id']}")
    page.get_by_test_id("break-glass-open").click()
    page.get_by_test_id("break-glass-reason").fill("患者胸痛来诊，需对照既往胸部CT影像")
    page.get_by_test_id("break-glass-submit").click()
    imaging = page.get_by_test_id("record-imaging")
    expect(imaging.get_by_role("row", name=re.compile("胸部CT平扫"))).to_contain_text("已签发")


def _upload_by_api(site: Any, token: str, files: list[bytes]) -> list[dict[str, Any]]:
    """Uploads as the web client does (presigned POSTs), then waits for the ingest's verdict."""
    import time

    names = [{"name": f"x{i}.dcm", "size": len(b)} for i, b in enumerate(files)]
    batch = _call(site, "POST", "/imaging/uploads", token, json={"files": names})
    assert batch.status_code == 201, batch.text
    for target, data in zip(batch.json()["files"], files, strict=True):
        post = target["post"]
        sent = requests.post(post["url"], data=post["fields"], files={"file": ("x.dcm", data)})
        assert sent.status_code < 300, sent.text
    for _ in range(60):
        status = _call(site, "GET", f"/imaging/uploads/{batch.json()['batch_id']}", token).json()
        if all(f["status"] not in ("pending", "failed") for f in status["files"]):
            return status["files"]
        time.sleep(0.5)
    raise AssertionError(f"the ingest did not settle: {status}")


def test_a_study_matched_to_nobody_is_linked_from_the_reconciliation_queue(
    page: Page, console, site, shot
):
    # Given a study whose DICOM patient is nobody in the master index, and the real person
    township = site.token("doctor", "doc-wangfang", institution_id="qiaotou", name="王芳")
    uploaded = _upload_by_api(site, township, _unknown_patient_ct())
    assert [f["status"] for f in uploaded] == ["indexed", "indexed"], uploaded
    registration = {
        "name": "诸葛待关", "sex": "female", "birth_date": "1966-07-08",
        "identifiers": [{"type": "local", "value": "QT-RECON-77", "assigner": "qiaotou"}],
    }  # fmt: skip
    created = _call(site, "POST", "/persons", township, json=registration)
    assert created.status_code == 201, created.text
    person_id = created.json()["person"]["person_id"]

    # When the township doctor opens 待关联影像 and links it by the person's id
    sign_in(page, "wangfang")
    menu(page).get_by_text("影像", exact=True).click()
    menu(page).get_by_text("待关联影像").click()
    card = page.get_by_test_id("unlinked-study").filter(has_text="诸葛待关")
    patient = card.get_by_test_id("dicom-patient")
    expect(patient).to_contain_text("女")
    expect(patient).to_contain_text("1966-07-08")
    expect(patient).to_contain_text("QT-X-0099")  # the CT's own number, unknown to the index
    expect(patient).to_contain_text("主索引中没有匹配的居民")
    assert fits_width(page)
    shot("75-imaging-reconciliation")
    card.get_by_test_id("link-person-id").fill(person_id)
    card.get_by_test_id("link-submit").click()

    # Then it leaves the queue and shows, linked, in the worklist
    expect(page.get_by_test_id("unlinked-study").filter(has_text="诸葛待关")).to_have_count(0)
    menu(page).get_by_text("影像检查").click()
    row = page.get_by_test_id("study-table").get_by_role("row", name=re.compile("诸葛待关"))
    expect(row).to_contain_text("2 幅")
    expect(row.get_by_test_id("study-unlinked")).to_have_count(0)


def _unknown_patient_ct() -> list[bytes]:
    """Two CT slices of a patient the index does not know (another local number)."""
    return dicom_factory.ct_series(
        n=2, rows=64, cols=64, patient_id="QT-X-0099", patient_name="诸葛待关",
        sex="F", birth_date="19660708", study_description="头颅CT平扫",
    )  # fmt: skip


def test_bad_files_are_rejected_with_their_reason_and_a_cine_scrolls_by_frame(
    page: Page, console, site, shot, new_context, tmp_path: Path
):
    # Given a text note, an interrupted upload and a 4-frame angiography cine
    files = {
        "readme.txt": dicom_factory.not_dicom("text"),
        "broken.dcm": dicom_factory.truncated(dicom_factory.ct_instance(patient_id="QT-BAD-1")),
        "cine.dcm": dicom_factory.multiframe_instance(
            frames=4, rows=64, cols=64, patient_id="QT-CINE-1", patient_name="东方造影",
        ),
    }  # fmt: skip
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)

    # When the township doctor uploads them
    sign_in(page, "wangfang")
    page.goto("/imaging/upload")
    page.get_by_test_id("upload-input").set_input_files([str(tmp_path / n) for n in files])
    page.get_by_test_id("upload-start").click()

    # Then each bad file says why it was refused, and the good one is indexed
    expect(page.get_by_test_id("upload-settled")).to_be_visible(timeout=60_000)
    table = page.get_by_test_id("upload-table")
    expect(table.get_by_role("row", name=re.compile("readme.txt"))).to_contain_text("NOT_DICOM")
    broken = table.get_by_role("row", name=re.compile("broken.dcm"))
    expect(broken).to_contain_text("已拒收")
    expect(broken).to_contain_text("TRUNCATED")
    expect(table.get_by_role("row", name=re.compile("cine.dcm"))).to_contain_text("已入库")
    expect(page.get_by_test_id("count-rejected")).to_have_text("已拒收 2")
    shot("76-imaging-upload-rejected")

    # and the cine's frames scroll one by one in the viewer
    page.get_by_test_id("upload-study").click()
    counter = page.get_by_test_id("instance-counter")
    expect(counter).to_have_text("1 / 4")
    page.get_by_test_id("instance-next").click()
    expect(counter).to_have_text("2 / 4")
    assert _loaded(page.get_by_test_id("viewer-image"))

    # The consortium admin's dead-letter panel: nothing lost, nothing to re-drive
    admin = new_context().new_page()
    console.watch(admin)
    sign_in(admin, "admin")
    menu(admin).get_by_text("影像", exact=True).click()
    menu(admin).get_by_text("影像死信").click()
    expect(admin.get_by_role("heading", level=1)).to_have_text("影像死信队列")
    expect(admin.get_by_text("死信队列为空")).to_be_visible()
    expect(admin.get_by_test_id("redrive")).to_be_disabled()
    admin.close()
