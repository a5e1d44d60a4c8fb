"""Build cache entries as an OCI image layout directory: export, and verified import.

One image per entry, each with a single layer: the entry's layer as an OCI layer tarball
(:func:`pytest_overlay.oci.write_tar`, whiteouts as ``.wh.`` files). The index names each
image by the entry's key (annotation ``org.opencontainers.image.ref.name``), so
``skopeo copy oci:DIR:<key> docker://registry/...`` or ``oras`` can push it, and a CI
cache step can carry the directory as it is.

Import trusts nothing in the directory: every blob's sha256 must match its name and the
descriptor that points at it, the layer goes through :func:`pytest_overlay.oci.read_tar`
(absolute names, ``..``, members below symlinks, devices and archive bombs refused), keys
must look like keys, and the layer is written into a fresh staging directory of the store,
then published atomically like a build. What import cannot prove is provenance: an entry
claims to be the build of its key; import only layouts from producers you trust.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from pytest_overlay._cache.store import FORMAT, CacheStore, Entry
from pytest_overlay._errors import OverlayError
from pytest_overlay._layers.io import default_xattr_namespace, read_layer, write_layer
from pytest_overlay._layers.layer import LayerError
from pytest_overlay.oci import read_tar, write_tar

__all__ = ["export_layout", "import_layout"]

MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
CONFIG: Final = "application/vnd.oci.image.config.v1+json"
LAYER: Final = "application/vnd.oci.image.layer.v1.tar"
REF: Final = "org.opencontainers.image.ref.name"
KEY: Final = "dev.pytest-overlay.cache.key"
FIXTURE: Final = "dev.pytest-overlay.cache.fixture"
FORMAT_NOTE: Final = "dev.pytest-overlay.cache.format"

_KEY_RE: Final = re.compile(r"[0-9a-f]{64}")
_DIGEST_RE: Final = re.compile(r"sha256:([0-9a-f]{64})")


def _write_blob(root: Path, data: bytes) -> dict[str, Any]:
    digest = hashlib.sha256(data).hexdigest()
    path = root / "blobs" / "sha256" / digest
    if not path.exists():
        path.write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def export_layout(entries: Sequence[Entry], target: Path) -> None:
    """Write *entries* to *target* (missing or an OCI layout of earlier exports)."""
    (target / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (target / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}\n')
    index_path = target / "index.json"
    manifests: list[dict[str, Any]] = []
    if index_path.exists():
        manifests = json.loads(index_path.read_text()).get("manifests", [])
    keys = {e.key for e in entries}
    manifests = [m for m in manifests if m.get("annotations", {}).get(KEY) not in keys]
    for entry in entries:
        with tempfile.TemporaryFile() as tar:
            write_tar(read_layer(entry.layer), tar)
            tar.seek(0)
            layer_blob = tar.read()
        layer = {"mediaType": LAYER, **_write_blob(target, layer_blob)}
        config = {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]},
        }
        annotations = {
            REF: entry.key,
            KEY: entry.key,
            FIXTURE: entry.fixture,
            FORMAT_NOTE: str(FORMAT),
        }
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": {"mediaType": CONFIG, **_write_blob(target, _json(config))},
            "layers": [layer],
            "annotations": annotations,
        }
        descriptor = _write_blob(target, _json(manifest))
        manifests.append({"mediaType": MANIFEST, **descriptor, "annotations": annotations})
    index: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    }
    index_path.write_bytes(_json(index))


def _json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _read_blob(root: Path, descriptor: object, what: str) -> bytes:
    """The blob *descriptor* points at, after checking its digest and size."""
    if not isinstance(descriptor, dict):
        raise OverlayError(f"{root}: {what}: not a descriptor")
    match = _DIGEST_RE.fullmatch(str(descriptor.get("digest", "")))
    if match is None:
        raise OverlayError(
            f"{root}: {what}: digest {descriptor.get('digest')!r} is not a sha256 digest"
        )
    path = root / "blobs" / "sha256" / match[1]
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise OverlayError(
            f"{root}: {what}: cannot read blob {path.name}: {exc.strerror}"
        ) from None
    if hashlib.sha256(data).hexdigest() != match[1] or len(data) != descriptor.get("size"):
        raise OverlayError(
            f"{root}: {what}: blob {match[1][:12]} does not match its digest or size "
            "(damaged or altered): export the cache again"
        )
    return data


def import_layout(store: CacheStore, source: Path) -> list[str]:
    """Verify every image in the layout *source* and publish it in *store*; its keys."""
    try:
        index = json.loads((source / "index.json").read_text())
    except (OSError, ValueError) as exc:
        raise OverlayError(
            f"{source} is not an OCI image layout written by --overlay-cache-export "
            f"(index.json: {exc})"
        ) from None
    imported: list[str] = []
    for descriptor in index.get("manifests", []):
        key = str(descriptor.get("annotations", {}).get(KEY, ""))
        if not _KEY_RE.fullmatch(key):
            raise OverlayError(f"{source}: an image without a valid {KEY} annotation: {key!r}")
        manifest = json.loads(_read_blob(source, descriptor, f"manifest of {key[:12]}"))
        if manifest.get("annotations", {}).get(FORMAT_NOTE) != str(FORMAT):
            continue  # another cache format: its keys can never match here
        layers = manifest.get("layers", [])
        if not isinstance(layers, list) or len(layers) != 1:
            raise OverlayError(f"{source}: image {key[:12]} must have exactly one layer")
        _read_blob(source, manifest.get("config"), f"config of {key[:12]}")
        blob = _read_blob(source, layers[0], f"layer of {key[:12]}")
        imported.append(key)
        _import_one(store, key, blob, str(manifest["annotations"].get(FIXTURE, "?")))
    return imported


def _import_one(store: CacheStore, key: str, blob: bytes, fixture: str) -> None:
    with tempfile.TemporaryFile() as tar:
        tar.write(blob)
        tar.seek(0)
        try:
            layer = read_tar(tar)
        except LayerError as exc:
            raise OverlayError(f"cache entry {key[:12]}: {exc}") from None
    staging = store.staging(key)
    try:
        # Whiteouts as overlayfs writes them (char 0/0), opaque markers in the namespace
        # this user's mounts read.
        write_layer(layer, staging / "layer", xattr_namespace=default_xattr_namespace())
        store.adopt(key, staging, fixture)
    except BaseException:
        from pytest_overlay._linux.workspace import remove_workspace

        if os.path.exists(staging):
            remove_workspace(staging)
        raise
