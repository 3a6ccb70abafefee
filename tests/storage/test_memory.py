from __future__ import annotations

import pytest

from kiln.config import Configuration
from kiln.storage import load_storage
from kiln.storage.memory import MemoryStorage
from kiln.storage.testing import StorageContract


class TestMemoryStorage(StorageContract):
    @pytest.fixture
    def backend(self):
        return MemoryStorage()


class NonTransactionalStorage(MemoryStorage):
    supports_transactions = False


class TestNonTransactionalStorage(StorageContract):
    @pytest.fixture
    def backend(self):
        return NonTransactionalStorage()


def test_load_storage_builds_a_memory_backend():
    storage = load_storage(Configuration.from_mapping({"storage": {"backend": "memory"}}))
    assert isinstance(storage, MemoryStorage)
    assert storage.initialize_schema(dry_run=True) == []


def test_a_flush_inside_a_transaction_is_undone_by_a_rollback():
    storage = MemoryStorage()
    storage.create("r", "", {"id": "a"})

    def fail():
        with storage.transaction():
            storage.flush()
            assert storage.list_all("r", "") == []
            raise KeyError

    with pytest.raises(KeyError):
        fail()
    assert [r["id"] for r in storage.list_all("r", "")] == ["a"]
