from __future__ import annotations

import pytest

from kiln import config


def test_the_ini_config_is_the_base_of_every_test():
    assert config.get("project.name") == "sample"


def test_set_config_changes_one_test(set_config):
    set_config("toast.one_sided", False)
    set_config("brand.new.key", 1)
    assert config.get("toast.one_sided") is False
    assert config.get("brand.new.key") == 1


def test_set_config_is_undone_after_the_test():
    assert config.get("toast.one_sided") is True
    assert config.get("brand") is None


def test_the_kiln_config_fixture_is_the_live_tree(kiln_config):
    kiln_config["toast"]["two_sided"] = "edited"
    assert config.get("toast.two_sided") == "edited"


def test_edits_of_the_live_tree_are_undone_too():
    assert config.get("toast.two_sided") is False


class TestToast:
    test_config = {"toast.one_sided": False, "toast.two_sided": True}

    def test_class_config_applies(self):
        assert config.get("toast.one_sided") is False
        assert config.get("toast.two_sided") is True

    def test_set_config_overrides_the_class_config(self, set_config, client):
        set_config("toast.one_sided", True)
        assert client.get("/toast").get_json() == {"one_sided": True, "two_sided": True}

    @pytest.mark.kiln_config({"toast.two_sided": "marker"}, extra="kw")
    def test_the_marker_overrides_the_class_config(self):
        assert config.get("toast.two_sided") == "marker"
        assert config.get("extra") == "kw"
