# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# PRIVATE to the edgefleet.iotedge collection. Do not use this from other collections:
# it may change at any time.

"""IoT Hub registry reads and device identity writes over the azure-iot-hub 2.7 SDK, and the iothub_device_info core.

The SDK's own urllib3 retries are switched off: every call runs inside `_http.RetryPolicy`, which is the one place
for retries. SDK exceptions become the collection's typed errors (ApiError keeps the hub's ``iothub-errorcode``).
"""

from __future__ import annotations

import json
import re
import traceback
from dataclasses import dataclass, field

from ansible_collections.edgefleet.iotedge.plugins.module_utils._connection_string import (
    IOTHUB_CONNECTION_STRING_ENV,
    ConnectionString,
    parse_service_connection_string,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._dps_records import strip_metadata
from ansible_collections.edgefleet.iotedge.plugins.module_utils._http import (
    RETRYABLE_STATUSES,
    ApiError,
    CloudError,
    ConfigurationError,
    Retryable,
    RetryPolicy,
    TransportError,
)

QUERY_PAGE_SIZE = 100
EDGE_AGENT = "$edgeAgent"
# "Query expressions can have a maximum length of 8192 characters" (Microsoft Learn, "Queries for IoT Hub device and
# module twins", section "Twin query limitations": https://learn.microsoft.com/azure/iot-hub/query-twins).
# Each ``deviceId IN [...]`` query is kept to half of that.
QUERY_MAX_LENGTH = 8192
QUERY_BUDGET = QUERY_MAX_LENGTH // 2
# Device ids that go into a query as ``'<id>'`` unchanged: up to 128 of the characters IoT Hub allows in a device id
# (Twin.deviceId in the service's REST spec, api-version 2021-04-12) except the quote itself. The query language
# documents backslash escapes in string literals, but they are not used: every other id is read with the
# per-device REST calls instead.
_QUERYABLE_ID = re.compile(r"[A-Za-z0-9\-:.+%_#*?!(),=@;$]{1,128}")
# Keys the hub adds to twin property collections; they are bookkeeping, not configuration.


class MissingLibraryError(CloudError):
    """The azure-iot-hub SDK (or a dependency such as six) cannot be imported."""

    def __init__(self, message, *, import_traceback):
        super().__init__(message)
        self.import_traceback = import_traceback


# The hub's service connection string has the same shape as DPS's.
HubConnection = ConnectionString


def parse_hub_connection_string(text, *, field: str = "connection_string") -> HubConnection:
    """An IoT Hub service connection string, or a ConfigurationError that names the field and never the key."""

    def refuse_device_strings(fields):
        if fields.get("DeviceId") or fields.get("ModuleId"):
            raise ConfigurationError(
                f"{field}: this is a device or module connection string; the registry needs a hub service policy "
                "(SharedAccessKeyName=iothubowner or registryRead)"
            )

    return parse_service_connection_string(
        text,
        field=field,
        service="IoT Hub service",
        where_to_find="Azure portal: IoT hub > Shared access policies > iothubowner or registryRead; or set "
        f"{IOTHUB_CONNECTION_STRING_ENV}",
        example_host="<hub>.azure-devices.net",
        check_fields=refuse_device_strings,
    )


def load_sdk():
    """The SDK pieces used here, imported on first use so the module can report a missing library cleanly."""
    try:
        from azure.iot.hub import IoTHubRegistryManager
        from azure.iot.hub.models import QuerySpecification
    except ImportError as exc:
        raise MissingLibraryError(
            f"Failed to import the azure-iot-hub Python library ({exc}). Install it on the host that runs the "
            "module (usually the controller): pip install 'azure-iot-hub==2.7.*' six "
            "(the SDK imports six without declaring it).",
            import_traceback=traceback.format_exc(),
        ) from None
    return IoTHubRegistryManager, QuerySpecification


def load_device_model():
    """The SDK's Device model (for writes), with the same clean report as load_sdk when the SDK is missing."""
    load_sdk()
    from azure.iot.hub.models import Device

    return Device


def if_match_header(etag) -> str:
    """An etag as the If-Match header carries it: quoted as the SDK sends it (RFC 7232); None means ``*``."""
    if etag is None or etag == "*":
        return "*"
    etag = str(etag)
    if len(etag) > 1 and etag[0] == etag[-1] == '"':
        return etag
    return f'"{etag}"'


# ---- error classification --------------------------------------------------------------------------------

_TRACKING_ID = re.compile(r"Tracking ID:\s*([^\s-][^\s]*?)(?:-G:|\s|$)")


def _hub_error_text(body) -> tuple:
    """(message, numeric code, tracking id) from either IoT Hub error body shape (protocols.md 4.4)."""
    if not isinstance(body, dict):
        return None, None, None
    message = body.get("Message") or body.get("message")
    code = body.get("errorCode")
    tracking = body.get("trackingId")
    if isinstance(message, str) and message.startswith("{"):
        try:
            inner = json.loads(message)
        except ValueError:
            inner = None
        if isinstance(inner, dict):
            message = inner.get("message") or message
            code = inner.get("errorCode", code)
            tracking = inner.get("trackingId", tracking)
    if isinstance(message, str) and message.startswith("ErrorCode:"):
        message = message.partition(";")[2] or message
    if tracking is None:
        match = _TRACKING_ID.search(str(body.get("ExceptionMessage") or ""))
        tracking = match.group(1) if match else None
    return message, code, tracking


def hub_api_error(status: int, headers, body, operation: str) -> ApiError:
    """An HTTP error answer of the hub -> ApiError with the hub's error name (``iothub-errorcode``)."""
    headers = headers or {}
    error_name = headers.get("iothub-errorcode")
    message, code, tracking = _hub_error_text(body)
    hint = {
        401: " (check the connection string's key and policy name)",
        403: " (the shared access policy lacks a right this call needs, e.g. RegistryRead)",
        429: " (IoT Hub is throttling; retry later)",
    }.get(status, "")
    label = f"{status} {error_name}" if error_name else str(status)
    return ApiError(
        f"IoT Hub answered {label}: {message or 'no details'}{hint}",
        status=status,
        error_code=error_name or code,
        tracking_id=tracking,
        operation=operation,
        details={"iothub_errorcode": error_name, "error_code": code} if (error_name or code) else None,
    )


def _response_of(exc):
    """The requests.Response inside an msrest HttpOperationError (duck-typed: no SDK import needed)."""
    response = getattr(exc, "response", None)
    return response if getattr(response, "status_code", None) is not None else None


def _transport_cause(exc):
    """The requests exception behind an msrest ClientRequestError, or ``exc`` itself if it is one."""
    inner = getattr(exc, "inner_exception", None)
    return inner if inner is not None else exc


def classify_sdk_error(exc, operation: str, host: str):
    """Translate an SDK exception: transient ones come back as Retryable, the rest as a typed error to raise."""
    response = _response_of(exc)
    if response is not None:
        try:
            body = response.json()
        except ValueError:
            body = None
        error = hub_api_error(response.status_code, response.headers, body, operation)
        if response.status_code in RETRYABLE_STATUSES:
            # The policy reads Retry-After (or x-ms-retry-after-ms, retry-after-ms) from the hub's answer.
            return Retryable(error, headers=response.headers)
        return error
    cause = _transport_cause(exc)
    name = type(cause).__name__
    text = str(cause)
    if name == "SSLError" or "CERTIFICATE_VERIFY_FAILED" in text:
        return TransportError(
            f"IoT Hub {operation}: the TLS certificate of {host} is not trusted ({name}); "
            "set ca_bundle to the CA that issued it"
        )
    if name in ("ConnectionError", "ConnectTimeout", "ReadTimeout", "Timeout", "ChunkedEncodingError") or isinstance(
        cause, (ConnectionError, TimeoutError)
    ):
        return Retryable(TransportError(f"IoT Hub {operation}: no answer from {host} ({name})"))
    return None


# ---- client ---------------------------------------------------------------------------------------------


def configure_sdk_transport(client, *, ca_bundle, validate_certs, timeout) -> None:
    """TLS, timeout and no retries of its own on an azure-iot-hub SDK client (registry or configuration manager)."""
    config = getattr(getattr(client, "protocol", None), "config", None)
    if config is None:
        return
    # msrest hands these to requests: a CA file path, or False to skip verification.
    config.connection.verify = ca_bundle if (ca_bundle and validate_certs) else bool(validate_certs)
    config.connection.timeout = timeout
    # Retries belong to RetryPolicy; the SDK's urllib3 retries would multiply them.
    config.retry_policy.retries = 0
    config.retry_policy.policy.status_forcelist = []


class IoTHubRegistry:
    """Registry reads and device identity writes; records are the SDK models' ``as_dict()`` (snake_case keys)."""

    def __init__(
        self,
        connection: HubConnection,
        *,
        ca_bundle=None,
        validate_certs=True,
        timeout=30,
        retry: RetryPolicy | None = None,
        registry_manager=None,
    ):
        self.connection = connection
        self.retry = retry or RetryPolicy()
        self._sdk_errors = self._sdk_error_types()
        if registry_manager is None:
            registry_class, self._query_spec = load_sdk()
            registry_manager = registry_class.from_connection_string(connection.text)
        else:
            self._query_spec = None
        self.registry = registry_manager
        configure_sdk_transport(registry_manager, ca_bundle=ca_bundle, validate_certs=validate_certs, timeout=timeout)

    @staticmethod
    def _sdk_error_types() -> tuple:
        types = []
        try:
            from msrest.exceptions import ClientException

            types.append(ClientException)
        except ImportError:
            pass
        try:
            from requests.exceptions import RequestException

            types.append(RequestException)
        except ImportError:
            pass
        return tuple(types) or (Exception,)

    def _run(self, operation: str, call):
        def attempt():
            try:
                return call()
            except self._sdk_errors as exc:
                translated = classify_sdk_error(exc, operation, self.connection.host_name)
                if translated is None:
                    raise ApiError(
                        f"IoT Hub {operation}: {type(exc).__name__}: {exc}", status=None, operation=operation
                    ) from None
                raise translated from None

        return self.retry.run(attempt, f"IoT Hub {operation}")

    def _get_or_none(self, operation: str, call):
        try:
            return self._run(operation, call)
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    def get_device(self, device_id: str):
        device = self._get_or_none("Devices_GetIdentity", lambda: self.registry.get_device(device_id))
        return device.as_dict() if device is not None else None

    @staticmethod
    def _device_model(device):
        """An SDK Device model from one, or from a record shaped like get_device's (snake_case or the wire's camelCase)."""
        if hasattr(device, "serialize"):
            return device
        return load_device_model().from_dict(device)

    def update_device(self, device_id: str, device, etag):
        """PUT the whole identity (``Devices_CreateOrUpdateIdentity``) only if the hub's etag is still ``etag``.

        ``device`` is an SDK Device model or a record as get_device returns it. The hub replaces the identity with
        what is sent, so send everything that is to stay (authentication with its keys or thumbprints, capabilities,
        device and parent scopes): start from a get_device record. A changed etag is an ApiError with status 412.
        Returns the identity the hub stored, as get_device does.
        """
        model = self._device_model(device)
        header = if_match_header(etag)
        updated = self._run(
            "Devices_CreateOrUpdateIdentity",
            lambda: self.registry.protocol.devices.create_or_update_identity(device_id, model, if_match=header),
        )
        return updated.as_dict()

    def delete_device(self, device_id: str, etag) -> None:
        """DELETE the identity (``Devices_DeleteIdentity``) only if the hub's etag is still ``etag`` (None: any).

        A changed etag is an ApiError with status 412, an unknown device one with status 404.
        """
        header = if_match_header(etag)
        self._run(
            "Devices_DeleteIdentity", lambda: self.registry.protocol.devices.delete_identity(device_id, if_match=header)
        )

    def get_twin(self, device_id: str):
        twin = self._get_or_none("Devices_GetTwin", lambda: self.registry.get_twin(device_id))
        return twin.as_dict() if twin is not None else None

    def update_twin_tags(self, device_id: str, tags_patch: dict, etag):
        """PATCH the twin's tags (``Devices_UpdateTwin``) only if the twin's etag is still ``etag`` (None: any).

        The hub applies ``tags_patch`` to the tags as a JSON merge patch: objects merge key by key, ``None`` removes
        a key, anything else replaces the value. Only ``tags`` is sent, so desired properties stay as they are.
        A changed etag is an ApiError with status 412, an unknown device one with status 404.
        Returns the twin the hub answers with, as get_twin does.
        """
        load_sdk()
        from azure.iot.hub.models import Twin

        body = Twin(tags=tags_patch)
        header = if_match_header(etag)
        updated = self._run(
            "Devices_UpdateTwin",
            lambda: self.registry.protocol.devices.update_twin(device_id, body, if_match=header),
        )
        return updated.as_dict()

    def get_modules(self, device_id: str) -> list:
        modules = self._get_or_none("Modules_GetModulesOnDevice", lambda: self.registry.get_modules(device_id))
        return [module.as_dict() for module in modules or []]

    def get_module_twin(self, device_id: str, module_id: str):
        twin = self._get_or_none("Modules_GetTwin", lambda: self.registry.get_module_twin(device_id, module_id))
        return twin.as_dict() if twin is not None else None

    def query_twins(self, query: str, page_size: int = QUERY_PAGE_SIZE) -> list:
        """The twins (device or module) a query returns, page by page through the continuation token."""
        query_spec = self._query_spec or load_sdk()[1]
        twins, continuation = [], None
        while True:
            page = self._run(
                "Query_GetTwins",
                lambda token=continuation: self.registry.query_iot_hub(query_spec(query=query), token, page_size),
            )
            twins.extend(item.as_dict() for item in page.items or [])
            continuation = page.continuation_token
            if not continuation:
                return twins

    def query_device_twins(self, page_size: int = QUERY_PAGE_SIZE) -> list:
        """Every device twin (``SELECT * FROM devices``)."""
        return self.query_twins("SELECT * FROM devices", page_size)


# ---- device_info core -----------------------------------------------------------------------------------


@dataclass
class DeviceInfoRequest:
    device_ids: list = field(default_factory=list)
    page_size: int = QUERY_PAGE_SIZE


def _module_status(section) -> dict:
    section = section if isinstance(section, dict) else {}
    return {name: (module or {}).get("runtimeStatus") for name, module in section.items() if isinstance(module, dict)}


def edge_agent_view(twin) -> dict | None:
    """What ``$edgeAgent`` reports about the runtime: the last deployment status and each module's status."""
    if twin is None:
        return None
    reported = strip_metadata((twin.get("properties") or {}).get("reported"))
    return {
        "connection_state": twin.get("connection_state"),
        "last_desired_status": reported.get("lastDesiredStatus"),
        "system_modules": _module_status(reported.get("systemModules")),
        "modules": _module_status(reported.get("modules")),
        "reported_properties": reported,
    }


def device_view(device: dict, twin: dict | None, modules: list | None, edge_agent_twin: dict | None) -> dict:
    """Device identity + twin -> snake_case; symmetric keys are never copied."""
    authentication = device.get("authentication") or {}
    thumbprints = authentication.get("x509_thumbprint") or {}
    twin = twin or {}
    properties = twin.get("properties") or {}
    iot_edge = bool((device.get("capabilities") or {}).get("iot_edge", False))
    view = {
        "device_id": device.get("device_id"),
        "status": device.get("status"),
        "status_reason": device.get("status_reason"),
        "authentication_type": authentication.get("type"),
        "x509_thumbprints": {
            "primary": thumbprints.get("primary_thumbprint"),
            "secondary": thumbprints.get("secondary_thumbprint"),
        },
        "iot_edge": iot_edge,
        "connection_state": device.get("connection_state"),
        "last_activity_time": device.get("last_activity_time"),
        "device_scope": device.get("device_scope"),
        "etag": device.get("etag"),
        "tags": twin.get("tags") or {},
        "desired_properties": strip_metadata(properties.get("desired")),
        "reported_properties": strip_metadata(properties.get("reported")),
        "twin_version": twin.get("version"),
        "module_identities": None,
        "edge_agent": None,
    }
    if iot_edge:
        view["module_identities"] = sorted(module.get("module_id") for module in modules or [])
        view["edge_agent"] = edge_agent_view(edge_agent_twin)
    return view


def _is_edge(record: dict) -> bool:
    return bool((record.get("capabilities") or {}).get("iot_edge"))


def _identity_from_twin(twin: dict) -> dict:
    """The device identity fields a device twin carries, shaped like ``Device.as_dict()`` for device_view."""
    return {
        "device_id": twin.get("device_id"),
        # The twin's own "etag" belongs to the twin; "deviceEtag" is the identity's etag.
        "etag": twin.get("device_etag"),
        "status": twin.get("status"),
        "status_reason": twin.get("status_reason"),
        "connection_state": twin.get("connection_state"),
        "last_activity_time": twin.get("last_activity_time"),
        "device_scope": twin.get("device_scope"),
        "authentication": {
            "type": twin.get("authentication_type"),
            "x509_thumbprint": twin.get("x509_thumbprint") or {},
        },
        "capabilities": twin.get("capabilities") or {},
    }


def _read_modules(client, device_id: str) -> tuple:
    """(module identities, ``$edgeAgent`` module twin) of one device, with the per-device REST calls."""
    modules = client.get_modules(device_id)
    agent_twin = None
    if any(module.get("module_id") == EDGE_AGENT for module in modules):
        agent_twin = client.get_module_twin(device_id, EDGE_AGENT)
    return modules, agent_twin


def _describe(client, device_id: str) -> dict | None:
    """One device with the per-device REST calls (identity, twin, modules, ``$edgeAgent`` twin); None if unknown."""
    device = client.get_device(device_id)
    if device is None:
        return None
    twin = client.get_twin(device_id)
    modules, agent_twin = _read_modules(client, device_id) if _is_edge(device) else (None, None)
    return device_view(device, twin, modules, agent_twin)


def _queryable(device_id: str) -> bool:
    return _QUERYABLE_ID.fullmatch(device_id) is not None


def _in_queries(collection: str, device_ids: list) -> list:
    """``SELECT * FROM <collection> WHERE deviceId IN [...]`` over the ids, each query at most QUERY_BUDGET long."""
    head = f"SELECT * FROM {collection} WHERE deviceId IN ["
    queries, literals, length = [], [], len(head) + 1
    for device_id in device_ids:
        if not _queryable(device_id):
            raise ValueError(f"device id {device_id!r} cannot be put into a query unchanged")
        literal = f"'{device_id}'"
        extra = len(literal) + (2 if literals else 0)
        if literals and length + extra > QUERY_BUDGET:
            queries.append(head + ", ".join(literals) + "]")
            literals, length, extra = [], len(head) + 1, len(literal)
        literals.append(literal)
        length += extra
    if literals:
        queries.append(head + ", ".join(literals) + "]")
    return queries


def _query_by_device(client, collection: str, device_ids: list, page_size: int) -> dict:
    """device id -> the twins an IN query over ``collection`` returned for it, only for the ids asked for."""
    wanted, found = set(device_ids), {}
    for query in _in_queries(collection, device_ids):
        for twin in client.query_twins(query, page_size=page_size):
            # Exact, case-sensitive match: a row for any other id is not an answer for one of these.
            if twin.get("device_id") in wanted:
                found.setdefault(twin["device_id"], []).append(twin)
    return found


def _queried_view(client, twin: dict, module_twins: list) -> dict:
    """A device view from its device twin and module twins, as _describe builds it from the REST reads."""
    if _is_edge(twin) and not module_twins:
        # IoT Hub creates $edgeAgent and $edgeHub with every edge device, so no module rows means that the id could
        # not be queried or that the query's results (which can lag behind the registry) did not have them yet.
        modules, agent_twin = _read_modules(client, twin["device_id"])
    else:
        unique = {}
        for module_twin in module_twins:
            unique.setdefault(module_twin.get("module_id"), module_twin)
        modules, agent_twin = list(unique.values()), unique.get(EDGE_AGENT)
    return device_view(_identity_from_twin(twin), twin, modules, agent_twin)


def _requested_ids(device_ids) -> list:
    """The ids in the order given, each once (device ids are case-sensitive in IoT Hub)."""
    wanted, seen = [], set()
    for device_id in device_ids:
        if not isinstance(device_id, str) or not device_id.strip():
            raise ConfigurationError(f"device_ids must be non-empty strings, got {device_id!r}")
        if device_id not in seen:
            seen.add(device_id)
            wanted.append(device_id)
    return wanted


def _edge_module_twins(client, twins, page_size: int) -> dict:
    edge_ids = [twin["device_id"] for twin in twins if _is_edge(twin) and _queryable(twin["device_id"])]
    return _query_by_device(client, "devices.modules", edge_ids, page_size) if edge_ids else {}


def device_info(client, request: DeviceInfoRequest) -> dict:
    """The named devices (unknown ids go to ``missing``) or, with no ids, every device of the hub.

    Devices are read with twin queries: one ``devices`` and one ``devices.modules`` query per QUERY_BUDGET of ids
    (paged). Ids that cannot go into a query unchanged, and ids the query did not return, are read with the
    per-device REST calls, which also decide whether a device is missing.
    """
    missing, devices = [], []
    if request.device_ids:
        wanted = _requested_ids(request.device_ids)
        queried = _query_by_device(client, "devices", [i for i in wanted if _queryable(i)], request.page_size)
        twins = {device_id: rows[0] for device_id, rows in queried.items()}
        found = [twins[device_id] for device_id in wanted if device_id in twins]  # in the order asked
        module_twins = _edge_module_twins(client, found, request.page_size)
        for device_id in wanted:
            twin = twins.get(device_id)
            # Not queryable unchanged, or not in the query's results (which can lag behind the registry): the REST
            # reads decide, so a device created a moment ago is read and not reported missing.
            view = (
                _describe(client, device_id)
                if twin is None
                else _queried_view(client, twin, module_twins.get(device_id, []))
            )
            if view is None:
                missing.append(device_id)
            else:
                devices.append(view)
    else:
        twins = client.query_device_twins(page_size=request.page_size)
        module_twins = _edge_module_twins(client, twins, request.page_size)
        for twin in twins:
            devices.append(_queried_view(client, twin, module_twins.get(twin["device_id"], [])))
    return {"changed": False, "devices": devices, "missing": missing}


__all__ = (
    "DeviceInfoRequest",
    "HubConnection",
    "IoTHubRegistry",
    "MissingLibraryError",
    "classify_sdk_error",
    "device_info",
    "device_view",
    "hub_api_error",
    "if_match_header",
    "load_device_model",
    "load_sdk",
    "parse_hub_connection_string",
)
