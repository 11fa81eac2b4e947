"""The user store: Argon2id hashes, IEC 62351-8 roles, authentication and the users file."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
import yaml
from argon2 import PasswordHasher

from security.users import Role, User, UserStore, UserStoreError, can_write

# Cheap parameters keep the tests fast; one test below uses the defaults.
FAST = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


@pytest.fixture
def store() -> UserStore:
    s = UserStore(hasher=FAST)
    s.add("olga", "operator-pass", [Role.OPERATOR])
    s.add("victor", "viewer-pass", ["viewer"])
    s.add("erin", "engineer-pass", [Role.ENGINEER, Role.VIEWER])
    s.add("sam", "secadm-pass", [Role.SECURITY_ADMIN, Role.AUDITOR])
    s.add("mia", "market-pass", [Role.MARKET_PARTICIPANT])
    return s


def test_passwords_are_stored_as_argon2id_hashes(store: UserStore) -> None:
    u = store.get("olga")
    assert u is not None
    assert u.password_hash.startswith("$argon2id$")
    assert "operator-pass" not in u.password_hash
    assert "operator-pass" not in repr(u) and "argon2" not in repr(u)
    # Same password, different salt: two hashes never match.
    assert store.hash_password("same-password") != store.hash_password("same-password")


def test_default_parameters_hash_and_verify() -> None:
    s = UserStore()
    s.add("alice", "correct horse", [Role.OPERATOR])
    h = s.get("alice").password_hash  # type: ignore[union-attr]
    assert "m=65536,t=3,p=4" in h  # RFC 9106 low-memory profile
    assert s.authenticate("alice", "correct horse") is not None


def test_authenticate(store: UserStore) -> None:
    u = store.authenticate("olga", "operator-pass")
    assert isinstance(u, User) and u.name == "olga"
    assert store.authenticate("olga", "operator-pas") is None
    assert store.authenticate("olga", "") is None
    assert store.authenticate("nobody", "operator-pass") is None
    assert store.authenticate("OLGA", "operator-pass") is None  # names are case-sensitive
    store.set_disabled("olga")
    assert store.authenticate("olga", "operator-pass") is None
    store.set_disabled("olga", False)
    assert store.authenticate("olga", "operator-pass") is not None


def test_roles_and_who_may_write(store: UserStore) -> None:
    writers = {u.name for u in store if can_write(u)}
    assert writers == {"olga", "erin"}
    assert not can_write(None)
    assert store.get("erin").has_role(Role.VIEWER)  # type: ignore[union-attr]
    store.set_roles("victor", [Role.OPERATOR])
    assert can_write(store.get("victor"))
    store.set_disabled("victor")
    assert not can_write(store.get("victor"))


def test_changes_are_checked(store: UserStore) -> None:
    with pytest.raises(UserStoreError, match="already exists"):
        store.add("olga", "another-pass", [Role.VIEWER])
    with pytest.raises(UserStoreError, match="at least 8"):
        store.add("tim", "short", [Role.VIEWER])
    with pytest.raises(UserStoreError, match="unknown role 'admin'"):
        store.add("tim", "long-enough", ["admin"])
    with pytest.raises(UserStoreError, match="user name"):
        store.add("bad name", "long-enough", [Role.VIEWER])
    with pytest.raises(UserStoreError, match="no user"):
        store.set_password("nobody", "long-enough")
    store.set_password("olga", "new-operator-pass")
    assert store.authenticate("olga", "operator-pass") is None
    assert store.authenticate("olga", "new-operator-pass") is not None
    store.remove("mia")
    assert "mia" not in store and len(store) == 4


@pytest.mark.parametrize("name", ["users.yaml", "users.json"])
def test_save_and_load_round_trip(store: UserStore, tmp_path: Path, name: str) -> None:
    path = tmp_path / "etc" / name
    store.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not store.dirty
    text = path.read_text()
    assert "operator-pass" not in text
    doc = json.loads(text) if name.endswith(".json") else yaml.safe_load(text)
    assert {u["name"] for u in doc["users"]} == {"olga", "victor", "erin", "sam", "mia"}
    loaded = UserStore.load(path, hasher=FAST)
    assert {u.name: u.roles for u in loaded} == {u.name: u.roles for u in store}
    assert loaded.authenticate("erin", "engineer-pass") is not None
    assert loaded.authenticate("erin", "viewer-pass") is None
    assert list(tmp_path.joinpath("etc").iterdir()) == [path]  # no temporary file left


def test_load_errors_name_the_problem(tmp_path: Path) -> None:
    missing = tmp_path / "none.yaml"
    with pytest.raises(UserStoreError, match="no such users file"):
        UserStore.load(missing)
    assert len(UserStore.load(missing, missing_ok=True)) == 0
    bad = tmp_path / "bad.yaml"
    cases = {
        "users: [": "not valid YAML",
        "people: []": "one key, 'users'",
        "users:\n  - {name: a, password: secret}": r"users\[0\]: unknown key.*never a password",
        "users:\n  - {name: a, password_hash: plain}": "not an Argon2 hash",
        "users:\n  - {name: a, password_hash: $argon2id$x, roles: [king]}": "unknown role 'king'",
        "users:\n  - {password_hash: $argon2id$x}": "'name' is missing",
        (
            "users:\n  - {name: a, password_hash: $argon2id$x}\n"
            "  - {name: a, password_hash: $argon2id$y}"
        ): "listed twice",
    }
    for text, msg in cases.items():
        bad.write_text(text)
        with pytest.raises(UserStoreError, match=msg) as ei:
            UserStore.load(bad)
        assert str(bad) in str(ei.value)


def test_outdated_hash_is_upgraded_on_login(tmp_path: Path) -> None:
    old = UserStore(hasher=FAST)
    old.add("olga", "operator-pass", [Role.OPERATOR])
    path = old.save(tmp_path / "users.yaml")
    stronger = PasswordHasher(time_cost=2, memory_cost=2048, parallelism=1)
    s = UserStore.load(path, hasher=stronger)
    assert s.authenticate("olga", "operator-pass") is not None
    assert s.dirty
    assert "m=2048,t=2" in s.get("olga").password_hash  # type: ignore[union-attr]
    s.save()
    assert UserStore.load(path, hasher=stronger).authenticate("olga", "operator-pass")
