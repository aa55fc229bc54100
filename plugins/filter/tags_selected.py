# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: tags_selected
short_description: Whether a task tagged with any of these tags runs under the run's --tags and --skip-tags
version_added: 0.1.0
description:
  - Applies ansible-core's own rules for one tag at a time (C(all), C(always), C(never), C(tagged), C(untagged) included)
    and is true when a task with any one of the tags would run.
  - C(edgefleet.iotedge.provision_edge) uses it to leave out a phase's checks, and to give a play of host phases no
    hosts when none of its phases runs, which saves the steps ansible-core would still run for every host of it.
author: edgefleet developers (@edgefleet)
options:
  _input:
    description: The tags of the phases, for example V([install, provision]).
    type: list
    elements: str
    required: true
  run_tags:
    description: The run's C(ansible_run_tags).
    type: list
    elements: str
    required: true
  skip_tags:
    description: The run's C(ansible_skip_tags).
    type: list
    elements: str
    required: true
"""

EXAMPLES = r"""
- name: Hosts - the phases that touch them, with no hosts when none of those phases runs
  hosts: >-
    {{ (['install', 'provision'] | edgefleet.iotedge.tags_selected(ansible_run_tags, ansible_skip_tags))
       | ternary('edge', 'all:!all') }}
  tasks: []
"""

RETURN = r"""
_value:
  description: True when a task tagged with one of the tags would run.
  type: bool
"""

from ansible.errors import AnsibleFilterError


def tag_runs(tag: str, run_tags, skip_tags) -> bool:
    """ansible-core's Taggable.evaluate_tags for a task with this one tag."""
    tags = {tag}
    runs = True
    if run_tags:
        runs = (
            "always" in tags
            or ("all" in run_tags and "never" not in tags)
            or bool(tags & run_tags)
            or ("tagged" in run_tags and "never" not in tags)
        )
    if runs and skip_tags:
        if "all" in skip_tags:
            runs = "always" in tags and "always" not in skip_tags
        elif tags & skip_tags or "tagged" in skip_tags:
            runs = False
    return runs


def tags_selected(tags, run_tags, skip_tags) -> bool:
    for name, value in (("tags", tags), ("run_tags", run_tags), ("skip_tags", skip_tags)):
        if not isinstance(value, (list, tuple, set, frozenset)) or not all(isinstance(tag, str) for tag in value):
            raise AnsibleFilterError(f"edgefleet.iotedge.tags_selected: {name} must be a list of tags")
    return any(tag_runs(tag, set(run_tags), set(skip_tags)) for tag in tags)


class FilterModule:
    def filters(self):
        return {"tags_selected": tags_selected}
