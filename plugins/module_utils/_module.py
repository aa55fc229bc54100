# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# PRIVATE to the edgefleet.iotedge collection. Do not use this from other collections:
# it may change at any time.

"""The one place where PKI module entry points meet AnsibleModule: dependency check, core call, error translation."""

from __future__ import annotations

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki import (
    CRYPTOGRAPHY_IMPORT_ERROR,
    HAS_CRYPTOGRAPHY,
    PkiError,
)


def run_pki_core(module, core, request) -> None:
    """Call `core(request, check_mode=...)`, then exit with its result (diff only in diff mode) or fail cleanly."""
    if not HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib("cryptography"), exception=CRYPTOGRAPHY_IMPORT_ERROR)
    try:
        result = core(request, check_mode=module.check_mode)
    except PkiError as exc:
        module.fail_json(msg=str(exc))
    except OSError as exc:
        module.fail_json(msg=f"{exc.filename or 'a file'}: {exc.strerror}; check the path and its permissions")
    else:
        diff = result.pop("diff", None)
        if module._diff and result.get("changed"):
            result["diff"] = diff
        module.exit_json(**result)


__all__ = ("run_pki_core",)
