"""The Data page through AppTest: demos, a server folder, every kind of upload, bad uploads.

Runs offline against a temporary cache; images are generated with PIL inside the tests.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from tests.conftest import private_app_env

REPO = Path(__file__).resolve().parent.parent
PAGE = str(REPO / "pages" / "data.py")
COLOURS = {"red": (220, 30, 30), "green": (30, 170, 50), "blue": (30, 70, 230)}


@pytest.fixture(scope="module", autouse=True)
def temp_cache(tmp_path_factory):
    yield from private_app_env(tmp_path_factory)


def png(colour: tuple[int, int, int], size: int = 24, seed: int = 0) -> bytes:
    image = Image.new("RGB", (size, size), colour)
    image.putpixel((seed % size, (seed * 7) % size), (seed * 37 % 256, 0, 0))  # distinct bytes
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def open_page(dataset: str | None = None) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=120)
    if dataset:
        at.session_state["dataset_spec"] = dataset
    at.run()
    assert not at.exception, at.exception
    return at


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def upload(at: AppTest, files: list[tuple[str, bytes, str]]) -> AppTest:
    at.file_uploader(key="data_upload_files").set_value(files)
    at.run()
    assert not at.exception, at.exception
    return at


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def skipped_sources(at: AppTest) -> list[str]:
    frames = [df.value for df in at.dataframe if "reason" in df.value.columns]
    return [str(s) for frame in frames for s in frame["source"]]


def test_each_demo_can_be_selected():
    from engine.data import list_demos

    at = open_page()
    demos = [d["spec"] for d in list_demos()]
    assert "demo:digits" in demos and "demo:sentences" in demos
    for spec in demos:
        at.selectbox(key="data_demo_choice").set_value(spec).run()
        expected = spec
        if spec.split("?")[0] == "demo:shapes":
            at.number_input(key="data_shapes_n").set_value(300).run()
            expected = "demo:shapes?n=300&seed=0"
        at.button(key="data_use_demo").click().run()
        assert not at.exception, (spec, at.exception)
        assert not errors(at), (spec, errors(at))
        assert at.session_state["dataset_spec"] == expected
        if spec == "demo:digits":
            assert metric(at, "Items") == "1,797"
            assert metric(at, "Labels") == "10"
            assert at.image, "no sample gallery for an image dataset"
        if spec == "demo:sentences":
            assert metric(at, "Modalities") == "texts"
        if expected.startswith("demo:shapes"):
            assert metric(at, "Items") == "300"


def staged_spec(at: AppTest) -> str:
    """The staged upload behind the session's dataset: the page holds it as a link
    (``upload:<token>/<file name>``), never as a server path."""
    from engine.store.cache import Cache
    from engine.store.links import resolve_link

    public = at.session_state["dataset_spec"]
    assert public.startswith("upload:") and os.environ["PARALLAX_CACHE"] not in public
    return resolve_link(public, Cache(os.environ["PARALLAX_CACHE"]))[0]


def test_zip_of_an_image_folder_with_a_corrupt_image():
    members = {
        f"pets/{label}/{label}_{i}.png": png(rgb, seed=i)
        for label, rgb in COLOURS.items()
        for i in range(3)
    }
    members["pets/red/broken.png"] = b"this is not a png"
    at = open_page()
    upload(at, [("My Pets (2024).zip", zip_bytes(members), "application/zip")])
    assert not errors(at), errors(at)
    assert at.session_state["dataset_spec"].endswith("/My Pets (2024).zip")
    spec = staged_spec(at)
    assert spec.startswith("zip:")
    # Saved under this session's upload folder, with a sanitised name.
    session = at.session_state["_parallax_session"]
    saved = Path(spec.removeprefix("zip:"))
    assert saved.is_relative_to(Path(os.environ["PARALLAX_CACHE"]).resolve() / "uploads" / session)
    assert " " not in saved.name and "(" not in saved.name
    assert metric(at, "Items") == "9"
    assert metric(at, "Labels") == "3"
    assert metric(at, "Skipped") == "1"
    assert any("broken.png" in s for s in skipped_sources(at))


def test_csv_manifest_with_a_zip_of_its_images():
    images = {f"img/{c}_{i}.png": png(rgb, seed=i) for c, rgb in COLOURS.items() for i in range(2)}
    rows = ["image,text,label,score"] + [
        f"{name},a {name.split('/')[1].split('_')[0]} square,{name.split('/')[1].split('_')[0]},{k}"
        for k, name in enumerate(images)
    ]
    at = open_page()
    upload(
        at,
        [
            ("captions.csv", "\n".join(rows).encode(), "text/csv"),
            ("images.zip", zip_bytes(images), "application/zip"),
        ],
    )
    assert not errors(at), errors(at)
    assert staged_spec(at).startswith("manifest:")
    assert metric(at, "Items") == "6"
    assert metric(at, "Modalities") == "images + texts"
    assert at.image
    # The metadata preview carries the manifest's extra column.
    assert any("score" in df.value.columns for df in at.dataframe)


def test_jsonl_manifest_with_texts_only():
    lines = [
        json.dumps({"text": f"sentence number {i} about {topic}", "label": topic})
        for i, topic in enumerate(["cats", "dogs", "tax", "rain"] * 3)
    ]
    at = open_page()
    upload(at, [("notes.jsonl", "\n".join(lines).encode(), "application/json")])
    assert not errors(at), errors(at)
    assert staged_spec(at).startswith("manifest:")
    assert metric(at, "Items") == "12"
    assert metric(at, "Modalities") == "texts"


def test_loose_images_become_a_folder():
    files = [(f"../../evil/{c}.png", png(rgb), "image/png") for c, rgb in COLOURS.items()]
    files.append(("red.png", png((200, 0, 0), seed=5), "image/png"))  # same name, kept apart
    at = open_page()
    upload(at, files)
    assert not errors(at), errors(at)
    spec = staged_spec(at)
    assert spec.startswith("folder:")
    folder = Path(spec.removeprefix("folder:"))
    assert folder.is_relative_to(Path(os.environ["PARALLAX_CACHE"]).resolve() / "uploads")
    assert sorted(p.name for p in folder.iterdir()) == [
        "blue.png",
        "green.png",
        "red-1.png",
        "red.png",
    ]
    assert metric(at, "Items") == "4"


@pytest.mark.parametrize(
    "files",
    [
        [("photos.zip", b"definitely not a zip archive", "application/zip")],
        [("empty.csv", b"image,text,label\n", "text/csv")],
        [
            ("one.zip", zip_bytes({"a.png": png((1, 2, 3))}), "application/zip"),
            ("two.zip", zip_bytes({"b.png": png((3, 2, 1))}), "application/zip"),
        ],
        [("notes.zip", zip_bytes({"readme.md": b"# nothing to see"}), "application/zip")],
    ],
    ids=["not-a-zip", "empty-manifest", "two-zips", "nothing-usable"],
)
def test_bad_upload_shows_an_error_and_keeps_the_dataset(files):
    at = open_page("demo:sentences")
    upload(at, files)
    assert errors(at), "a bad upload must say why"
    assert all("Traceback" not in e for e in errors(at))
    assert at.session_state["dataset_spec"] == "demo:sentences"
    assert metric(at, "Modalities") == "texts"


def test_missing_server_folder_is_an_error_line(tmp_path):
    at = open_page("demo:digits")
    at.text_input(key="data_folder_path").set_value(str(tmp_path / "nope")).run()
    at.button(key="data_open_folder").click().run()
    assert not at.exception, at.exception
    assert errors(at)
    assert at.session_state["dataset_spec"] == "demo:digits"


def test_server_folder(tmp_path):
    for label, rgb in COLOURS.items():
        (tmp_path / label).mkdir()
        for i in range(2):
            (tmp_path / label / f"{i}.png").write_bytes(png(rgb, seed=i))
    at = open_page()
    at.text_input(key="data_folder_path").set_value(str(tmp_path)).run()
    at.button(key="data_open_folder").click().run()
    assert not errors(at), errors(at)
    assert at.session_state["dataset_spec"] == f"folder:{tmp_path}"
    assert metric(at, "Items") == "6"


def skipped_reasons(at: AppTest) -> dict[str, str]:
    frames = [df.value for df in at.dataframe if "reason" in df.value.columns]
    return {str(s): str(r) for f in frames for s, r in zip(f["source"], f["reason"], strict=True)}


def test_a_zips_other_files_are_listed_as_skipped_and_the_sidebar_names_the_upload():
    members = {f"pets/red/{i}.png": png(COLOURS["red"], seed=i) for i in range(3)}
    members["pets/notes.txt"] = b"not an image"
    members["pets/README"] = b"no suffix"
    at = open_page()
    upload(at, [("pets.zip", zip_bytes(members), "application/zip")])
    assert not errors(at), errors(at)
    assert metric(at, "Items") == "3"
    why = skipped_reasons(at)
    assert why["archive member notes.txt"].startswith("not an image (.txt)")
    assert why["archive member README"].startswith("not an image (no suffix)")
    sidebar = [c.value for c in at.sidebar.code]
    assert sidebar[0] == at.session_state["dataset_spec"] == at.query_params["ds"]


def test_after_opening_a_text_csv_the_sidebar_lists_no_image_model():
    from engine.models import known_models

    modalities = {m["spec"]: set(m["modalities"]) for m in known_models()}
    at = open_page("demo:digits")
    at.session_state["model_specs"] = ["baseline:pixels"]  # chosen for the images before
    rows = ["text,label", *(f"sentence number {i},{'ab'[i % 2]}" for i in range(12))]
    upload(at, [("notes.csv", "\n".join(rows).encode(), "text/csv")])
    assert not errors(at), errors(at)
    assert metric(at, "Modalities") == "texts"
    listed = [c.value for c in at.sidebar.code][1:]
    assert listed, "the text dataset's default models"
    assert all("text" in modalities.get(m, {"text"}) for m in listed), listed
    assert "baseline:pixels" not in listed
