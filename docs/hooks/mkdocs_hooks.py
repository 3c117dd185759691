"""mkdocs hooks of the documentation site (`hooks:` in mkdocs.yml).

`on_files` adds the generated pages (reference/config.md from the pydantic schemas, reference/cli.md
from the Typer app) and the concepts figure; `on_page_markdown` fills the registered-names tables and
links plain-text `docs/<page>.md` mentions. The generators live in `nft_docs` next to this file (mkdocs
puts this folder on `sys.path` while it imports the hook), so tests can call them directly.
"""

from __future__ import annotations

from typing import Any

from mkdocs.structure.files import File, Files
from nft_docs import catalogue, cli_reference, config_reference, figure, links


def generated_files() -> dict[str, str | bytes]:
    """Every file the site gets from the code, by its path in the site's sources."""
    return {
        config_reference.PAGE: config_reference.render_config_reference(),
        cli_reference.PAGE: cli_reference.render_cli_reference(),
        figure.PATH: figure.concepts_figure(),
    }


def on_files(files: Files, config: Any) -> Files:
    """Add the generated pages and the figure; a checked-in file of the same name is an error, so the
    reference can never be a stale copy."""
    for path, content in generated_files().items():
        if files.get_file_from_path(path) is not None:
            raise ValueError(f"docs/{path} is generated when the site is built; delete the checked-in copy")
        files.append(File.generated(config, path, content=content))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    """Registered-names tables where a page asks for them; `docs/<page>.md` mentions as links."""
    source = page.file.src_uri
    markdown = catalogue.fill_markers(markdown, source)
    pages = {file.src_uri for file in files.documentation_pages()}
    return links.link_mentions(markdown, source, pages)
