"""MkDocs hook: pages that other branches add join the navigation only once their file exists.

``docs/extending.md`` (extending dnas with a space or a component) goes after "Architecture"; until
the file is there the strict build stays green without it.
"""

from pathlib import Path

OPTIONAL_PAGES = [("Extending dnas", "extending.md", "Architecture")]


def on_config(config, **kwargs):
    docs = Path(config["docs_dir"])
    nav = config["nav"]
    for title, page, after in OPTIONAL_PAGES:
        if not (docs / page).is_file() or any(page in entry.values() for entry in nav if isinstance(entry, dict)):
            continue
        index = next((i + 1 for i, entry in enumerate(nav) if isinstance(entry, dict) and after in entry), len(nav))
        nav.insert(index, {title: page})
    return config
