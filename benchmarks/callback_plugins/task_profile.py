# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Per-task wall time of a playbook run, written as JSON to $EDGEFLEET_TASK_PROFILE (the benchmarks' profile).

An aggregate callback (it leaves the output to the stdout callback): each task's wall time runs from its start to
the next task's (or handler's) start, as the linear strategy runs them, with the number of hosts that ran it.
"""

from __future__ import annotations

import json
import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = r"""
name: task_profile
type: aggregate
short_description: Per-task wall time, as JSON, for the benchmarks
description: Writes one record per task (play, task name, seconds, hosts that ran it) to E(EDGEFLEET_TASK_PROFILE).
requirements:
  - enable in ansible.cfg or E(ANSIBLE_CALLBACKS_ENABLED)
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "task_profile"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self._records = []
        self._play = ""
        self._current = None

    def _close(self):
        if self._current is not None:
            self._current["seconds"] = round(time.monotonic() - self._current.pop("started"), 3)
            self._records.append(self._current)
            self._current = None

    def v2_playbook_on_play_start(self, play):
        self._close()
        self._play = play.get_name()

    def _start(self, task, kind):
        self._close()
        self._current = {
            "play": self._play,
            "task": task.get_name(),
            "kind": kind,
            "hosts": 0,
            "started": time.monotonic(),
        }

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._start(task, "task")

    def v2_playbook_on_handler_task_start(self, task):
        self._start(task, "handler")

    def _ran(self, result, *_args, **_kwargs):
        if self._current is not None and not result._result.get("skipped"):
            self._current["hosts"] += 1

    v2_runner_on_ok = v2_runner_on_failed = v2_runner_on_unreachable = _ran

    def v2_playbook_on_stats(self, stats):
        self._close()
        path = os.environ.get("EDGEFLEET_TASK_PROFILE")
        if path:
            with open(path, "w", encoding="utf-8") as handle:
                json.dump(self._records, handle, indent=1)
