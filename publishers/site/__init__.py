"""Pricing pages: the Catalog as self-contained static HTML and JSON (preview and published snapshot).

`render_site` is the entry point; `build_page_model` gives the data behind one page.
"""

from publishers.site.model import build_page_model
from publishers.site.render import Site, SitePage, render_error_page, render_site
from publishers.site.views import PageModel

__all__ = ["PageModel", "Site", "SitePage", "build_page_model", "render_error_page", "render_site"]
