"""The catalogue of patterns (catalogue.toml) and where each one stands in the tree."""

import tomllib
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Entry:
    id: str
    name: str
    folder: str
    aliases: tuple[str, ...]
    summary: str

    @property
    def category(self) -> str:
        return self.folder.split("/")[0].removesuffix("_patterns")

    @property
    def slug(self) -> str:
        return self.folder.rsplit("/", 1)[-1].replace("_", "-")

    @property
    def path(self) -> Path:
        return REPO_ROOT / self.folder

    @property
    def implemented(self) -> bool:
        return (self.path / "compose.yaml").exists()

    @property
    def status(self) -> str:
        return "implemented" if self.implemented else "planned"


def entries() -> list[Entry]:
    raw = tomllib.loads((REPO_ROOT / "catalogue.toml").read_text())
    return [
        Entry(e["id"], e["name"], e["folder"], tuple(e["aliases"]), e["summary"])
        for e in raw["entry"]
    ]


def find(name: str) -> Entry | None:
    """The entry a PATTERN= value names: folder name with hyphens or underscores, an alias, or
    the path of a folder holding a compose.yaml (a pattern copied into a project with no
    catalogue.toml)."""
    folder = (Path.cwd() / name).resolve()
    looks_like_a_path = "/" in name or name.startswith(".")
    if (
        looks_like_a_path
        and (folder / "compose.yaml").is_file()
        and folder.is_relative_to(REPO_ROOT)
    ):
        title = folder.name.replace("_", " ").capitalize()
        return Entry("", title, folder.relative_to(REPO_ROOT).as_posix(), (), "")
    wanted = name.strip().lower().replace("_", "-")
    for entry in entries():
        if wanted in (entry.slug, *entry.aliases):
            return entry
    return None


def markdown_table() -> str:
    """The README's catalogue table: `python -m shared.catalogue` prints it."""
    lines = [
        "| # | Pattern | Category | Status | What it does |",
        "| --- | --- | --- | --- | --- |",
    ]
    for e in entries():
        lines.append(
            f"| {e.id} | [{e.name}]({e.folder}/) | {e.category} | {e.status} | {e.summary} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())  # noqa: T201
