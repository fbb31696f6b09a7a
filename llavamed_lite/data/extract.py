"""Safe extraction of PMC packages (`.tar.gz`): an archive from the internet may try to write
outside the target (absolute paths, `..`, links), create devices, or unpack to an absurd size. Every
member is checked before anything is written; one bad member refuses the whole package with an error
naming the package and the member, and the caller goes on with the next package."""

import shutil
import tarfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Callable

from PIL import Image

MAX_MEMBER_BYTES = 256 * 1024 * 1024  # one file of a PMC package (the largest are videos and PDFs)
MAX_TOTAL_BYTES = 2 * 1024 * 1024 * 1024
MAX_MEMBERS = 20_000
ARTICLE_SUFFIXES = (".nxml", ".xml")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".tif", ".tiff", ".bmp", ".webp")


class ArchiveError(ValueError):
    """A package that cannot be extracted: unsafe member, corrupt or truncated
    archive. Names package and member."""


def curation_member(name: str) -> bool:
    """The members curation needs: the article XML and images (PDFs, videos
    and supplements stay packed)."""
    return name.lower().endswith(ARTICLE_SUFFIXES + IMAGE_SUFFIXES)


def check_member(member: tarfile.TarInfo, package: str,
                 max_member_bytes: int = MAX_MEMBER_BYTES) -> None:
    """Raise ArchiveError if extracting this member could escape the target or is absurd."""
    name = member.name

    def bad(reason: str):
        raise ArchiveError(f"{package}: member {name!r}: {reason}")

    path = PurePosixPath(name)
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        bad("absolute path")
    if ".." in path.parts or "\\" in name:
        bad("path leaves the target directory ('..' or a backslash)")
    if member.ischr() or member.isblk() or member.isfifo():
        bad("device or FIFO")
    if member.issym() or member.islnk():
        # a hard link names a member from the archive root; a symlink is relative to its own folder
        if member.islnk():
            resolved = PurePosixPath(member.linkname)
        else:
            resolved = path.parent / member.linkname
        if member.linkname.startswith("/") or _escapes(resolved):
            bad(f"link pointing outside the package ({member.linkname!r})")
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        bad("unsupported member type")
    if member.size > max_member_bytes:
        bad(f"{member.size} bytes is larger than the limit of {max_member_bytes}")


def _normalise(path: PurePosixPath) -> PurePosixPath:
    parts: list[str] = []
    for p in path.parts:
        if p == "..":
            parts.append("..") if not parts or parts[-1] == ".." else parts.pop()
        elif p not in (".", ""):
            parts.append(p)
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


def _escapes(path: PurePosixPath) -> bool:
    return _normalise(path).parts[:1] == ("..",)


def safe_extract(archive: str | Path, dest: str | Path,
                 wanted: Callable[[str], bool] = curation_member,
                 max_member_bytes: int = MAX_MEMBER_BYTES, max_total_bytes: int = MAX_TOTAL_BYTES,
                 max_members: int = MAX_MEMBERS) -> list[Path]:
    """Check every member of `archive`, then extract the wanted regular files into `dest`.
    Returns the extracted paths. Raises ArchiveError (unsafe member, too large, truncated or
    corrupt); `dest` is then left empty."""
    archive, dest = Path(archive), Path(dest)
    package = archive.name
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = []
            total = 0
            for member in tar:  # iterating reads every header: a truncated archive fails here
                check_member(member, package, max_member_bytes)
                members.append(member)
                total += member.size
                if len(members) > max_members:
                    raise ArchiveError(f"{package}: more than {max_members} members")
                if total > max_total_bytes:
                    raise ArchiveError(f"{package}: member {member.name!r}: the package unpacks "
                                       f"to more than {max_total_bytes} bytes")
            dest.mkdir(parents=True, exist_ok=True)
            out = []
            for member in members:
                if not member.isfile() or not wanted(member.name):
                    continue
                target = dest / member.name
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(member)
                with open(target, "wb") as f:
                    shutil.copyfileobj(src, f, 1 << 20)
                if target.stat().st_size != member.size:
                    raise ArchiveError(f"{package}: member {member.name!r}: truncated "
                                       f"({target.stat().st_size} of {member.size} bytes)")
                out.append(target)
            return out
    except ArchiveError:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        shutil.rmtree(dest, ignore_errors=True)
        if isinstance(e, FileNotFoundError) and not archive.exists():
            raise ArchiveError(f"{package}: no such archive ({archive})") from None
        raise ArchiveError(f"{package}: truncated or corrupt archive "
                           f"({type(e).__name__}: {e})") from None


def extract_listed_images(archive: str | Path, images: list[tuple[str, str]], out_dir: str | Path,
                          max_member_bytes: int = MAX_MEMBER_BYTES) -> list[dict]:
    """LLaVA-Med's image manifest names, per package, the figure files to take (`image_file_path`)
    and their `pair_id`: save each as out_dir/{pair_id}.jpg (RGB JPEG, written atomically; an
    existing one is kept). Returns one {pair_id, status: "done"|"skipped"|"failed", reason} per
    listed image. Raises ArchiveError if the package itself is unsafe or corrupt."""
    archive, out_dir = Path(archive), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    wanted = {PurePosixPath(path).as_posix(): pair_id for path, pair_id in images}
    results = {pair_id: {"pair_id": pair_id, "status": "failed", "reason": "not in the package"}
               for pair_id in wanted.values()}
    for pair_id in wanted.values():
        if (out_dir / f"{pair_id}.jpg").exists():
            results[pair_id] = {"pair_id": pair_id, "status": "skipped",
                                "reason": "already extracted"}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                check_member(member, archive.name, max_member_bytes)
                pair_id = wanted.get(member.name)
                if (pair_id is None or not member.isfile()
                        or results[pair_id]["status"] == "skipped"):
                    continue
                target = out_dir / f"{pair_id}.jpg"
                tmp = target.with_name(f".{target.name}.tmp")
                try:
                    with Image.open(tar.extractfile(member)) as im:
                        im.convert("RGB").save(tmp, format="JPEG", quality=95)
                    tmp.replace(target)
                    results[pair_id] = {"pair_id": pair_id, "status": "done", "reason": "extracted"}
                except (OSError, ValueError, Image.DecompressionBombError) as e:
                    tmp.unlink(missing_ok=True)
                    results[pair_id] = {"pair_id": pair_id, "status": "failed",
                                        "reason": f"unreadable image ({e})"}
    except (tarfile.TarError, EOFError, zlib.error) as e:
        raise ArchiveError(f"{archive.name}: truncated or corrupt archive "
                           f"({type(e).__name__}: {e})") from None
    return list(results.values())


def find_article_xml(files: list[Path]) -> Path | None:
    """The article's XML among a package's files: the `.nxml` (PMC) if there
    is one, else a single `.xml`."""
    nxml = sorted(p for p in files if p.suffix.lower() == ".nxml")
    if nxml:
        return nxml[0]
    xml = sorted(p for p in files if p.suffix.lower() == ".xml")
    return xml[0] if len(xml) == 1 else None


def find_graphic(href: str | None, folder: Path) -> Path | None:
    """The image file for a <graphic xlink:href>: PMC hrefs usually omit the extension
    ("koaf197f1" -> koaf197f1.jpg, not the .gif thumbnail); preprints name a .tif that packagers
    convert. Prefers jpg, then png."""
    if not href or href.startswith(("http:", "https:", "/")) or ".." in href:
        return None
    stem = PurePosixPath(href).name
    is_image = PurePosixPath(stem).suffix.lower() in IMAGE_SUFFIXES
    base = PurePosixPath(stem).stem if is_image else stem
    exact = folder / stem
    preferred = [".jpg", ".jpeg", ".png", ".tif", ".tiff", ".gif", ".bmp", ".webp"]
    candidates = [exact] if exact.suffix.lower() in (".jpg", ".jpeg", ".png") else []
    candidates += ([folder / (base + s) for s in preferred]
                   + [folder / (base + s.upper()) for s in preferred])
    if exact not in candidates:
        candidates.append(exact)
    for c in candidates:
        if c.is_file():
            return c
    return None

