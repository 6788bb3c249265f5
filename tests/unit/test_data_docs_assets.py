"""The Data Docs pages load nothing from the internet: every style and script GX's templates name is a
copy the package ships, and the served pages point at those copies."""

from __future__ import annotations

import re
from pathlib import Path

from chat_ingest.data_docs import ASSETS_DIR, ASSETS_PATH, GX_IMAGES, OFFLINE_ASSETS, offline_page, offline_stylesheet

#: What a page loads: a stylesheet or a script (an ``<a href>`` is a link, fetched only when followed).
LOADED = re.compile(r"<(?:link|script)\b[^>]*\b(?:href|src)=\"(https?://[^\"]+)\"")


def gx_templates() -> list[Path]:
    from great_expectations.render.view import view

    return sorted((Path(view.__file__).parent / "templates").rglob("*.j2"))


def test_every_style_and_script_gx_loads_from_a_cdn_is_shipped():
    loaded = {url for template in gx_templates() for url in LOADED.findall(template.read_text())}
    assert loaded, "GX's templates name no CDN file any more: this test no longer checks anything"
    assert loaded <= set(OFFLINE_ASSETS), f"no shipped copy of {sorted(loaded - set(OFFLINE_ASSETS))}"
    for copy in OFFLINE_ASSETS.values():
        assert (ASSETS_DIR / copy).is_file() and (ASSETS_DIR / copy).stat().st_size, copy
    # images come from a base a template sets: GX's bucket, whose images the site's static/ folder holds
    bases = {base for template in gx_templates()
             for base in re.findall(r'static_images_dir = "(https?://[^"]+)"', template.read_text())}
    assert bases == {GX_IMAGES}


def test_the_logo_is_the_sites_own_image_without_the_bucket_or_its_tracking_query():
    from great_expectations.render.view import view

    page = f'<img class="NO-CACHE" src="{GX_IMAGES}logo-long.png?d=20261208T003000.000000Z&dataContextId=x"/>'
    assert offline_page(page, depth=4) == '<img class="NO-CACHE" src="../../../../static/images/logo-long.png"/>'
    assert (Path(view.__file__).parent / "static" / "images" / "logo-long.png").is_file()


def test_a_served_page_points_at_the_copies_relative_to_its_own_folder():
    page = ('<link rel="stylesheet" href="https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css"/>'
            '<script src="https://code.jquery.com/jquery-3.7.1.min.js"></script>'
            '<a href="https://greatexpectations.io">Great Expectations</a>')
    served = offline_page(page, depth=2)
    assert f'href="../../{ASSETS_PATH}/bootstrap/bootstrap.min.css"' in served
    assert f'src="../../{ASSETS_PATH}/jquery/jquery.min.js"' in served
    assert 'href="https://greatexpectations.io"' in served  # a link stays a link
    assert offline_page(page, depth=0).count(f'"{ASSETS_PATH}/') == 2


def test_the_font_awesome_stylesheet_finds_its_fonts_beside_it():
    stylesheet = ASSETS_DIR / "fontawesome" / "css" / "all.min.css"
    fonts = set(re.findall(r"url\(\.\./webfonts/([^)]+)\)", stylesheet.read_text()))
    assert fonts and all((ASSETS_DIR / "fontawesome" / "webfonts" / font).is_file() for font in fonts)


def test_gx_stylesheets_load_nothing_from_beyond_the_site():
    from great_expectations.render.view import view

    for stylesheet in (Path(view.__file__).parent / "static").rglob("*.css"):
        served = offline_stylesheet(stylesheet.read_text(encoding="utf-8"))
        assert not re.findall(r"url\(['\"]?https?://", served), stylesheet
