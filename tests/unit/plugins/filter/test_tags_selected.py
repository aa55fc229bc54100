"""edgefleet.iotedge.tags_selected: the same answer as ansible-core's own tag rules, for every combination."""

from __future__ import annotations

import itertools

import pytest

from ansible.errors import AnsibleFilterError
from ansible.playbook.block import Block
from ansible.playbook.play import Play
from ansible.playbook.task import Task

from ansible_collections.edgefleet.iotedge.plugins.filter.tags_selected import tags_selected

TAGS = ["install", "provision", "always", "never"]
CHOICES = [[], ["all"], ["install"], ["provision"], ["tagged"], ["always"], ["install", "pki"], ["never"]]


def ansible_runs(tags, run_tags, skip_tags) -> bool:
    task = Task(block=Block(play=Play()))
    task.tags = tags
    return task.evaluate_tags(run_tags, skip_tags, all_vars={})


@pytest.mark.parametrize(("run_tags", "skip_tags"), list(itertools.product(CHOICES[1:], CHOICES)))
@pytest.mark.parametrize("tag", TAGS)
def test_one_tag_runs_exactly_when_ansible_runs_a_task_with_it(tag, run_tags, skip_tags):
    assert tags_selected([tag], run_tags, skip_tags) is ansible_runs([tag], run_tags, skip_tags)


def test_any_of_several_tags_that_runs_selects_them():
    assert tags_selected(["install", "provision"], ["provision"], []) is True
    assert tags_selected(["install", "provision"], ["all"], ["install"]) is True
    assert tags_selected(["install", "provision"], ["pki", "dps"], []) is False
    assert tags_selected(["install", "provision"], ["all"], ["install", "provision"]) is False


def test_what_is_not_a_list_of_tags_is_refused():
    with pytest.raises(AnsibleFilterError, match="run_tags must be a list of tags"):
        tags_selected(["install"], "install", [])
