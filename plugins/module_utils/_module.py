# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# PRIVATE to the edgefleet.iotedge collection. Do not use this from other collections:
# it may change at any time.

"""The one place where module entry points meet AnsibleModule: shared option specs, core call, error translation."""

from __future__ import annotations

from ansible.module_utils.basic import env_fallback, missing_required_lib

from ansible_collections.edgefleet.iotedge.plugins.module_utils._connection_string import (
    DPS_CONNECTION_STRING_ENV,
    IOTHUB_CONNECTION_STRING_ENV,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._dps_client import (
    DpsServiceClient,
    parse_connection_string,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._http import (
    ApiError,
    CloudError,
    RetriesExhaustedError,
    RetryPolicy,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._iothub import (
    IoTHubRegistry,
    parse_hub_connection_string,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._pki import (
    CRYPTOGRAPHY_IMPORT_ERROR,
    HAS_CRYPTOGRAPHY,
    PkiError,
)

CA_BUNDLE_ENV = "EDGEFLEET_CA_BUNDLE"


def secret_option(**extra) -> dict:
    """A secret's argument spec: never logged, and typed ``raw`` so that the check in run_*_core sees what was given.

    With ``type: str``, Ansible turns a list into its text: ``['pw']`` would silently become the passphrase.
    """
    return {"type": "raw", "no_log": True, **extra}


def device_batch_options(states: list) -> dict:
    """The argument spec of a per-device batch of the fleet PKI (pki_identity, pki_edge_ca; DeviceBatchRequest)."""
    return {
        "ca_path": {"type": "path", "required": True},
        "path": {"type": "path", "required": True},
        "devices": {"type": "list", "elements": "raw", "required": True},
        "key_type": {
            "type": "str",
            "default": "ec-p256",
            "choices": ["ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096"],
        },
        "valid_days": {"type": "int", "default": 365},
        "renew_before_days": {"type": "int", "default": 30},
        "generation": {"type": "str", "default": "1.2+", "choices": ["1.1", "1.2+"]},
        "passphrase": secret_option(),
        "state": {"type": "str", "default": "present", "choices": states},
    }


def refuse_secrets_that_are_not_text(module) -> None:
    """Fail, naming the option, when a secret (secret_option) is not a string; never shows the value."""
    for name, spec in module.argument_spec.items():
        value = module.params.get(name)
        if spec.get("no_log") and spec.get("type") == "raw" and value is not None and not isinstance(value, str):
            module.fail_json(
                msg=f"{name}: must be a string, got a {type(value).__name__}. Give the secret as text "
                "(quoted in YAML, from ansible-vault); nothing was changed"
            )


def http_argument_spec() -> dict:
    """TLS, timeout and retry options shared by every module that calls Azure (doc fragment _cloud.HTTP)."""
    return {
        "ca_bundle": {"type": "path", "fallback": (env_fallback, [CA_BUNDLE_ENV])},
        "validate_certs": {"type": "bool", "default": True},
        "timeout": {"type": "float", "default": 30},
        "max_retries": {"type": "int", "default": 8},
        "retry_budget_seconds": {"type": "float", "default": 300},
    }


def dps_argument_spec() -> dict:
    """The DPS service connection (doc fragment _cloud.DPS) plus the HTTP options."""
    return {
        "connection_string": secret_option(fallback=(env_fallback, [DPS_CONNECTION_STRING_ENV])),
        **http_argument_spec(),
    }


def iothub_argument_spec() -> dict:
    """The IoT Hub service connection (EDGEFLEET_IOTHUB_CONNECTION_STRING) plus the HTTP options (_cloud.HTTP)."""
    return {
        "connection_string": secret_option(fallback=(env_fallback, [IOTHUB_CONNECTION_STRING_ENV])),
        **http_argument_spec(),
    }


def retry_policy(params) -> RetryPolicy:
    return RetryPolicy(max_retries=params["max_retries"], budget_seconds=params["retry_budget_seconds"])


def http_options(params) -> dict:
    """The client keyword arguments that http_argument_spec()'s options give: TLS, timeout and retries."""
    return {
        "ca_bundle": params["ca_bundle"],
        "validate_certs": params["validate_certs"],
        "timeout": params["timeout"],
        "retry": retry_policy(params),
    }


def dps_client(params):
    """A DpsServiceClient from the module's connection options (ConfigurationError on a bad connection string)."""
    return DpsServiceClient(parse_connection_string(params["connection_string"]), **http_options(params))


def iothub_client(params, client_class=IoTHubRegistry):
    """An IoT Hub client (IoTHubRegistry, or a subclass of it) from the module's connection options
    (ConfigurationError on a bad connection string)."""
    return client_class(parse_hub_connection_string(params["connection_string"]), **http_options(params))


def _exit_with_result(module, result: dict) -> None:
    diff = result.pop("diff", None)
    if module._diff and result.get("changed") and diff is not None:
        result["diff"] = diff
    module.exit_json(**result)


def require_cryptography(module) -> None:
    if not HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib("cryptography"), exception=CRYPTOGRAPHY_IMPORT_ERROR)


def run_pki_core(module, core, request) -> None:
    """Call `core(request, check_mode=...)`, then exit with its result (diff only in diff mode) or fail cleanly."""
    refuse_secrets_that_are_not_text(module)
    require_cryptography(module)
    try:
        result = core(request, check_mode=module.check_mode)
    except PkiError as exc:
        module.fail_json(msg=str(exc))
    except OSError as exc:
        module.fail_json(msg=path_error(module, exc))
    else:
        _exit_with_result(module, result)


def path_error(module, exc: OSError) -> str:
    """The failing file, led by the path option it lies under ("path: /x/ca: Not a directory; ..."), so that a role
    can name its own variable for that option, as it does for the cores' "option: ..." messages."""
    filename = exc.filename
    options = [
        name
        for name, spec in module.argument_spec.items()
        if spec.get("type") == "path" and isinstance(module.params.get(name), str) and filename
        if filename == module.params[name] or str(filename).startswith(module.params[name].rstrip("/") + "/")
    ]
    option = max(options, key=lambda name: len(module.params[name]), default=None)
    return (
        f"{option + ': ' if option else ''}{filename or 'a file'}: {exc.strerror}; check the path and its permissions"
    )


def run_cloud_core(module, call) -> None:
    """Call ``call()`` (it builds its client from module.params and runs one core); translate every typed error.

    Service errors keep DPS's / IoT Hub's own status, error code and tracking id in the failure result.
    """
    refuse_secrets_that_are_not_text(module)
    require_cryptography(module)
    try:
        result = call()
    except (ApiError, RetriesExhaustedError) as exc:
        module.fail_json(msg=str(exc), **exc.to_result())
    except (CloudError, PkiError) as exc:
        module.fail_json(msg=str(exc))
    except OSError as exc:
        module.fail_json(msg=path_error(module, exc))
    else:
        _exit_with_result(module, result)


__all__ = (
    "device_batch_options",
    "dps_argument_spec",
    "dps_client",
    "http_argument_spec",
    "http_options",
    "iothub_argument_spec",
    "iothub_client",
    "path_error",
    "refuse_secrets_that_are_not_text",
    "require_cryptography",
    "retry_policy",
    "run_cloud_core",
    "run_pki_core",
    "secret_option",
)
