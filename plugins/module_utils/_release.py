# Copyright: contributors to aws_masking.gateway
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Release records of a deployment: what the files and packages were, kept on the host.

A release is a directory ``<releases_dir>/<id>/`` with ``manifest.json`` and ``files/``, where
every recorded path is stored under its absolute path (``files/etc/...``). Secret values are
never stored: each occurrence of a secret (read from its file under the secrets directory) is
replaced by ``@@AWS_MASKING_SECRET:<name>@@`` and put back from the current secret file on
restore, so a release restores byte for byte while the secrets stay where they are.

Standard library only, Python 3.9+.
"""

import datetime
import grp
import hashlib
import json
import os
import pwd
import shutil
import stat
import subprocess

MANIFEST = "manifest.json"
FILES = "files"
PLACEHOLDER = "@@AWS_MASKING_SECRET:{}@@"
# A secret shorter than this could match ordinary text; it is refused rather than substituted.
MIN_SECRET_LENGTH = 8
FORMAT = 1


class ReleaseError(Exception):
    """A release cannot be recorded or restored; the message says why and what to do."""


def secret_files_in(directories):
    """name -> path for every file in the secret directories (a missing directory has none)."""
    found = {}
    for directory in directories:
        if os.path.isdir(directory):
            for name in sorted(os.listdir(directory)):
                if os.path.isfile(os.path.join(directory, name)):
                    found.setdefault(name, os.path.join(directory, name))
    return found


def read_secrets(secret_files, secret_dirs=()):
    """name -> value for each secret file that exists (missing files are skipped), and for
    every file in ``secret_dirs`` (named after the file)."""
    secrets = {}
    every = dict(secret_files_in(secret_dirs), **secret_files)
    for name, path in sorted(every.items()):
        if not os.path.isfile(path):
            continue
        with open(path, "rb") as handle:
            value = handle.read().strip()
        if not value:
            continue
        if len(value) < MIN_SECRET_LENGTH:
            raise ReleaseError(f"the secret in {path} is shorter than {MIN_SECRET_LENGTH} "
                               "characters; it cannot be kept out of release records safely")
        secrets[name] = value
    return secrets


def redact(data, secrets):
    for name, value in secrets.items():
        data = data.replace(value, PLACEHOLDER.format(name).encode())
    return data


def unredact(data, secrets):
    for name, value in secrets.items():
        data = data.replace(PLACEHOLDER.format(name).encode(), value)
    return data


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


def _owner(uid, gid):
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    try:
        group = grp.getgrgid(gid).gr_name
    except KeyError:
        group = str(gid)
    return user, group


def _walk(path):
    """Every regular file at or under ``path``, sorted; nothing when it does not exist."""
    if os.path.isfile(path):
        return [path]
    found = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        found.extend(os.path.join(root, name) for name in sorted(files))
    return found


def snapshot(paths, secrets):
    """path -> {sha256, mode, owner, group, data} of the current files, secrets redacted."""
    files = {}
    for top in paths:
        for path in _walk(top):
            info = os.stat(path)
            with open(path, "rb") as handle:
                data = redact(handle.read(), secrets)
            owner, group = _owner(info.st_uid, info.st_gid)
            files[path] = {"sha256": _sha256(data), "mode": f"{stat.S_IMODE(info.st_mode):04o}",
                           "owner": owner, "group": group, "data": data}
    return files


def package_versions(names):
    """name -> installed version (dpkg), only for packages that are installed."""
    if not names:
        return {}
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package}\t${Version}\t${db:Status-Abbrev}\n", *names],
        capture_output=True, text=True, check=False)
    versions = {}
    for line in result.stdout.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[2].startswith("ii"):
            versions[parts[0]] = parts[1]
    return versions


def fingerprint(files, packages, roots):
    """One hash over the files and packages of a state, to tell whether two are the same.

    The variables are left out: they describe the inventory of the run that recorded the
    state, and a rollback records the restored files while the inventory still says otherwise.
    """
    digest = hashlib.sha256()
    state = {
        "roots": sorted(roots),
        "files": {path: [meta["sha256"], meta["mode"], meta["owner"], meta["group"]]
                  for path, meta in sorted(files.items())},
        "packages": packages,
    }
    digest.update(json.dumps(state, sort_keys=True).encode())
    return digest.hexdigest()


class Releases:
    """The release records under one directory."""

    def __init__(self, root):
        self.root = root

    def ids(self):
        """Release ids, the least recently deployed first.

        A release's place is the last time a deploy recorded its state ("deployed" in its
        manifest): a redeploy of an older state moves that release to the end.
        """
        if not os.path.isdir(self.root):
            return []
        names = [name for name in os.listdir(self.root)
                 if os.path.isfile(os.path.join(self.root, name, MANIFEST))]
        return sorted(names, key=lambda name: (self.manifest(name).get("deployed", ""), name))

    def manifest(self, release_id):
        path = os.path.join(self.root, release_id, MANIFEST)
        if not os.path.isfile(path):
            raise ReleaseError(f"no release {release_id!r} under {self.root} "
                               f"(known: {', '.join(self.ids()) or 'none'})")
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)

    def find(self, state_fingerprint):
        """The newest release with this fingerprint, or None."""
        for release_id in reversed(self.ids()):
            if self.manifest(release_id).get("fingerprint") == state_fingerprint:
                return release_id
        return None

    def previous(self):
        """The release before the newest one: what "roll back" means without a name."""
        ids = self.ids()
        if len(ids) < 2:
            raise ReleaseError(f"{self.root} holds {len(ids)} release(s); a rollback to the "
                               "previous release needs two (deploy records one per change)")
        return ids[-2]

    def _new_id(self, now):
        base = now.strftime("%Y%m%dT%H%M%S%fZ")
        release_id, suffix = base, 1
        while os.path.exists(os.path.join(self.root, release_id)):
            suffix += 1
            release_id = f"{base}-{suffix}"
        return release_id

    def record(self, paths, packages, variables, secrets, metadata, keep, check_mode,
               promote=True):
        """Record the current state unless a release already holds it.

        A release that holds it but is not the newest is made the newest (``promote``), since
        this state is what was deployed last. Returns (result, changed): result names the
        release holding the state and the ids pruned (or that would be).
        """
        before = self.ids()
        files = snapshot(paths, secrets)
        versions = package_versions(packages)
        state_fingerprint = fingerprint(files, versions, paths)
        existing = self.find(state_fingerprint)
        pruned = self._prunable(keep, adding=existing is None)
        promoting = promote and existing is not None and before[-1] != existing
        if existing is not None and not pruned and not promoting:
            return {"release": existing, "created": False, "pruned": [],
                    "releases_before": before}, False
        if check_mode:
            return {"release": existing, "created": existing is None, "pruned": pruned,
                    "releases_before": before}, True
        release_id = existing
        if existing is None:
            release_id = self._write(files, versions, variables, paths, secrets,
                                     state_fingerprint, metadata)
        elif promoting:
            self._mark_deployed(existing)
        for old in pruned:
            shutil.rmtree(os.path.join(self.root, old))
        return {"release": release_id, "created": existing is None, "pruned": pruned,
                "releases_before": before}, True

    def _prunable(self, keep, adding):
        ids = self.ids()
        if keep == 0:
            return []
        excess = len(ids) + (1 if adding else 0) - keep
        return ids[:excess] if excess > 0 else []

    @staticmethod
    def _now():
        return datetime.datetime.now(datetime.timezone.utc)

    def _mark_deployed(self, release_id):
        manifest = self.manifest(release_id)
        manifest["deployed"] = self._now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        path = os.path.join(self.root, release_id, MANIFEST)
        with open(f"{path}.new", "w", encoding="utf-8") as handle:
            json.dump(manifest, handle, indent=2, sort_keys=True)
            handle.write("\n")
        os.chmod(f"{path}.new", 0o600)
        os.replace(f"{path}.new", path)

    def _write(self, files, versions, variables, paths, secrets, state_fingerprint, metadata):
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        os.chmod(self.root, 0o700)
        now = self._now()
        release_id = self._new_id(now)
        staging = os.path.join(self.root, f".{release_id}.partial")
        os.makedirs(os.path.join(staging, FILES), mode=0o700)
        for path, meta in files.items():
            target = os.path.join(staging, FILES, path.lstrip("/"))
            os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
            with open(target, "wb") as handle:
                handle.write(meta["data"])
            os.chmod(target, 0o600)
        manifest = {
            "format": FORMAT,
            "id": release_id,
            "created": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "deployed": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "fingerprint": state_fingerprint,
            "roots": sorted(paths),
            "files": {path: {k: v for k, v in meta.items() if k != "data"}
                      for path, meta in sorted(files.items())},
            "packages": versions,
            "variables": variables,
            # Only the secrets a stored file refers to are needed to restore it.
            "secrets": sorted(name for name in secrets
                              if any(PLACEHOLDER.format(name).encode() in meta["data"]
                                     for meta in files.values())),
            **metadata,
        }
        with open(os.path.join(staging, MANIFEST), "w", encoding="utf-8") as handle:
            json.dump(manifest, handle, indent=2, sort_keys=True)
            handle.write("\n")
        os.chmod(os.path.join(staging, MANIFEST), 0o600)
        os.rename(staging, os.path.join(self.root, release_id))
        return release_id

    def plan_restore(self, release_id, secrets):
        """What a restore of ``release_id`` would change: files to write and to remove,
        packages whose installed version differs."""
        manifest = self.manifest(release_id)
        missing = sorted(set(manifest.get("secrets", [])) - set(secrets))
        if missing:
            raise ReleaseError(f"release {release_id} needs the secret(s) {', '.join(missing)}, "
                               "whose files are missing on this host")
        current = snapshot(manifest["roots"], secrets)
        write = []
        for path, meta in manifest["files"].items():
            now = current.get(path)
            compared = ("sha256", "mode", "owner", "group")
            if now is None or any(now[key] != meta[key] for key in compared):
                write.append(path)
        remove = sorted(set(current) - set(manifest["files"]))
        installed = package_versions(sorted(manifest["packages"]))
        packages = {name: version for name, version in sorted(manifest["packages"].items())
                    if installed.get(name) != version}
        return manifest, sorted(write), remove, packages

    def restore_files(self, release_id, manifest, write, remove, secrets):
        # Every stored copy is read and checked before the first file is touched.
        contents = {}
        for path in write:
            with open(os.path.join(self.root, release_id, FILES, path.lstrip("/")), "rb") as src:
                stored = src.read()
            if _sha256(stored) != manifest["files"][path]["sha256"]:
                raise ReleaseError(f"release {release_id}: the stored copy of {path} does not "
                                   "match its manifest checksum; the release is damaged")
            contents[path] = unredact(stored, secrets)
        for path in write:
            meta = manifest["files"][path]
            os.makedirs(os.path.dirname(path), exist_ok=True)
            temporary = f"{path}.aws-masking-rollback"
            with open(temporary, "wb") as handle:
                handle.write(contents[path])
            uid = pwd.getpwnam(meta["owner"]).pw_uid
            gid = grp.getgrnam(meta["group"]).gr_gid
            os.chown(temporary, uid, gid)
            os.chmod(temporary, int(meta["mode"], 8))
            os.replace(temporary, path)
        for path in remove:
            os.unlink(path)


def unavailable_packages(packages):
    """``name=version`` pins apt cannot install (the version is in no configured source)."""
    missing = []
    for name, version in sorted(packages.items()):
        result = subprocess.run(["apt-cache", "show", f"{name}={version}"],
                                capture_output=True, text=True, check=False)
        if result.returncode != 0 or not result.stdout.strip():
            missing.append(f"{name}={version}")
    return missing
