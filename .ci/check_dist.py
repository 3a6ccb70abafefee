"""`make build`'s content check: the sdist and the wheel carry every file of src/.

    python .ci/check_dist.py dist

A file kiln reads at run time (SQL migrations, the /docs page's assets,
templates) but the build config leaves out would only fail on a user's
machine; here it fails the build. Exits 1 naming each missing file.
"""

from __future__ import annotations

import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def source_files() -> set[str]:
    """Every file under src/, relative to it, bytecode left out."""
    src = ROOT / "src"
    return {
        path.relative_to(src).as_posix()
        for path in src.rglob("*")
        if path.is_file()
        and "__pycache__" not in path.parts
        and path.suffix != ".pyc"
        and ".egg-info" not in path.as_posix()
    }


def main(dist: Path) -> int:
    expected = source_files()
    (wheel,) = dist.glob("*.whl")
    (sdist,) = dist.glob("*.tar.gz")
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    with tarfile.open(sdist) as archive:
        # "<name>-<version>/src/kiln/..." -> "kiln/..."
        in_sdist = {name.split("/src/", 1)[1] for name in archive.getnames() if "/src/" in name}
    problems = [f"{wheel.name} lacks {name}" for name in sorted(expected - in_wheel)]
    problems += [f"{sdist.name} lacks src/{name}" for name in sorted(expected - in_sdist)]
    for problem in problems:
        print(f"check_dist: {problem}", file=sys.stderr)
    if not problems:
        print(f"check_dist: {wheel.name} and {sdist.name} carry all {len(expected)} files of src/")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
