# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# PRIVATE to the edgefleet.iotedge collection. Do not use this from other collections:
# it may change at any time.

"""IoT Edge automatic deployments (IoT Hub configurations): the iothub_deployment and iothub_deployment_info cores.

A deployment's content cannot change once created; only targetCondition, priority, labels and metrics can (IoT Hub
REST 2021-04-12, Configuration_CreateOrUpdate: "Configuration identifier and Content cannot be updated"). So each
content is a *version* with an id of its own, ``<name>-<first 12 hex digits of the SHA-256 of the canonical
content>``, labelled with the name and the version so that every version of a name is found again:

- same content: same id; targetCondition, priority, labels and metrics are updated in place with If-Match;
- new content: a new id is created; the versions it replaces are removed once it has taken over (see
  `takeover`), or at once, or never (``remove_superseded``).

Calls go through the azure-iot-hub SDK (IoTHubConfigurationManager, and the registry's twin query) with the SDK's
own retries off: `_http.RetryPolicy` retries 429 (honouring Retry-After), 5xx and dropped connections, bounded. The
hub's answers are read as it sends them (``raw``), so nothing the SDK's models do not know is lost.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from ansible_collections.edgefleet.iotedge.plugins.module_utils._deployment_manifest import (
    EDGE_AGENT,
    VERSION,
    VERSION_LENGTH,
    check_modules_content,
    check_name,
    content_version,
    deployment_id,
    is_layered,
    module_images,
    module_names,
    modules_content_of,
    read_manifest_file,
    target_condition_from_tags,
    version_of_id,
)
from ansible_collections.edgefleet.iotedge.plugins.module_utils._dps_records import strip_metadata
from ansible_collections.edgefleet.iotedge.plugins.module_utils._http import ApiError, ConfigurationError
from ansible_collections.edgefleet.iotedge.plugins.module_utils._iothub import (
    QUERY_PAGE_SIZE,
    IoTHubRegistry,
    configure_sdk_transport,
    load_sdk,
)

STATES = ("present", "absent")
REMOVE_SUPERSEDED = ("when_taken_over", "always", "never")
# The labels that tie a configuration to this module: the deployment's name and the content version.
NAME_LABEL = "edgefleet_deployment"
VERSION_LABEL = "edgefleet_version"
MANAGED_LABELS = (NAME_LABEL, VERSION_LABEL)
APPLIED = "Applied"
# A 412 on an in-place update (the version changed between read and write) is answered by reading and writing once
# more; a second 412 fails the run.
WRITE_ATTEMPTS = 2
# How many device ids a "kept" reason names before it only counts.
SHOWN_DEVICES = 5


def load_configuration_sdk():
    """The SDK's configuration manager and models, with load_sdk's clean report when the SDK is missing."""
    load_sdk()
    from azure.iot.hub import IoTHubConfigurationManager
    from azure.iot.hub.models import Configuration, ConfigurationContent, ConfigurationMetrics, QuerySpecification

    return IoTHubConfigurationManager, (Configuration, ConfigurationContent, ConfigurationMetrics, QuerySpecification)


class IoTHubDeployments(IoTHubRegistry):
    """Configurations (wire-shaped dicts, camelCase as the hub answers) and raw twin queries."""

    def __init__(
        self,
        connection,
        *,
        ca_bundle=None,
        validate_certs=True,
        timeout=30,
        retry=None,
        registry_manager=None,
        configuration_manager=None,
        models=None,
    ):
        super().__init__(
            connection,
            ca_bundle=ca_bundle,
            validate_certs=validate_certs,
            timeout=timeout,
            retry=retry,
            registry_manager=registry_manager,
        )
        if configuration_manager is None or models is None:
            manager_class, sdk_models = load_configuration_sdk()
            configuration_manager = configuration_manager or manager_class.from_connection_string(connection.text)
            models = models or sdk_models
        configure_sdk_transport(
            configuration_manager, ca_bundle=ca_bundle, validate_certs=validate_certs, timeout=timeout
        )
        self.manager = configuration_manager
        self.models = models

    @staticmethod
    def _json(raw):
        return raw.response.json() if raw is not None and raw.response.content else None

    def _model(self, body: dict):
        configuration, content, metrics, _query = self.models
        return configuration(
            id=body["id"],
            labels=body.get("labels"),
            content=content(modules_content=body["content"]["modulesContent"]),
            target_condition=body.get("targetCondition"),
            priority=body.get("priority"),
            metrics=metrics(queries=(body.get("metrics") or {}).get("queries") or {}),
        )

    def list_configurations(self) -> list:
        """Every configuration of the hub (no ``top``: the hub answers all of them, as az iot does it)."""
        operations = self.manager.protocol.configuration
        return (
            self._json(
                self._run("Configuration_GetConfigurations", lambda: operations.get_configurations(None, None, True))
            )
            or []
        )

    def get_configuration(self, configuration_id: str):
        operations = self.manager.protocol.configuration
        raw = self._get_or_none("Configuration_Get", lambda: operations.get(configuration_id, None, True))
        return self._json(raw)

    def create_configuration(self, body: dict) -> dict:
        """PUT without If-Match: the hub refuses an existing id (409 ConfigurationAlreadyExists)."""
        operations, model = self.manager.protocol.configuration, self._model(body)
        return self._json(
            self._run(
                "Configuration_CreateOrUpdate", lambda: operations.create_or_update(body["id"], model, None, None, True)
            )
        )

    def update_configuration(self, body: dict, etag: str) -> dict:
        """PUT with If-Match (the etag as read, as the SDK's update_configuration sends it): 412 when it changed."""
        operations, model = self.manager.protocol.configuration, self._model(body)
        return self._json(
            self._run(
                "Configuration_CreateOrUpdate", lambda: operations.create_or_update(body["id"], model, etag, None, True)
            )
        )

    def delete_configuration(self, configuration_id: str, etag) -> None:
        operations = self.manager.protocol.configuration
        self._run("Configuration_Delete", lambda: operations.delete(configuration_id, etag or "*", None, True))

    def query_rows(self, query: str, page_size: int = QUERY_PAGE_SIZE) -> list:
        """The rows of a twin query as the hub sends them (the SDK's Twin model drops ``configurations``)."""
        query_spec = self.models[3]
        rows, continuation = [], None
        while True:
            raw = self._run(
                "Query_GetTwins",
                lambda token=continuation: self.registry.protocol.query.get_twins(
                    query_spec(query=query), token, page_size, None, True
                ),
            )
            rows.extend(self._json(raw) or [])
            continuation = (raw.headers or {}).get("x-ms-continuation")
            if not continuation:
                return rows


# ---- request -----------------------------------------------------------------------------------------------


@dataclass
class DeploymentRequest:
    name: str
    state: str = "present"
    manifest: dict | None = None
    manifest_path: str | None = None
    target_condition: str | None = None
    target_tags: dict | None = None
    priority: int = 0
    labels: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    # None: false for a manifest, the stored content's for a version.
    layered: bool | None = None
    remove_superseded: str = "when_taken_over"
    # An existing version of ``name`` whose stored content is used instead of a manifest (to raise its priority or
    # retarget it: a rollback).
    version: str | None = None
    page_size: int = QUERY_PAGE_SIZE


@dataclass
class Desired:
    """A checked request: the version's id and the body the hub gets."""

    name: str
    version: str
    configuration_id: str
    modules_content: dict
    layered: bool
    target_condition: str
    priority: int
    labels: dict
    metrics: dict

    def body(self) -> dict:
        return {
            "id": self.configuration_id,
            "labels": dict(self.labels),
            "content": {"modulesContent": self.modules_content},
            "targetCondition": self.target_condition,
            "priority": self.priority,
            "metrics": {"queries": dict(self.metrics)},
        }


def _check_labels(labels) -> dict:
    if labels is None:
        return {}
    if not isinstance(labels, dict):
        raise ConfigurationError("labels: must be a mapping of label name -> text")
    checked = {}
    for key, value in labels.items():
        if not isinstance(key, str) or not key:
            raise ConfigurationError(f"labels: names must be non-empty strings, got {key!r}")
        if key in MANAGED_LABELS:
            raise ConfigurationError(
                f"labels: {key} is set by the module (it records the deployment's name and content version); "
                "use another label name"
            )
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ConfigurationError(f"labels.{key}: must be text (labels are strings), got {value!r}")
        checked[key] = value if isinstance(value, str) else str(value)
    return checked


def _check_metrics(metrics) -> dict:
    if metrics is None:
        return {}
    if not isinstance(metrics, dict):
        raise ConfigurationError("metrics: must be a mapping of metric name -> query")
    for name, query in metrics.items():
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"metrics: names must be non-empty strings, got {name!r}")
        if not isinstance(query, str) or not query.strip():
            raise ConfigurationError(
                f'metrics.{name}: must be a query text such as "SELECT deviceId FROM devices.modules WHERE '
                "moduleId = '$edgeAgent' AND properties.reported.lastDesiredStatus.code = 200\""
            )
    return dict(metrics)


def _check_target(request: DeploymentRequest) -> str:
    if request.target_condition is not None and request.target_tags is not None:
        raise ConfigurationError("target_condition and target_tags are mutually exclusive; give one of them")
    if request.target_tags is not None:
        return target_condition_from_tags(request.target_tags)
    if request.target_condition is None:
        raise ConfigurationError(
            "state=present needs target_condition or target_tags (which devices the deployment targets); "
            "an empty target_condition creates it targeting no device"
        )
    if not isinstance(request.target_condition, str):
        raise ConfigurationError("target_condition: must be a string, such as \"tags.ring='canary'\"")
    return request.target_condition


def _content_source(request: DeploymentRequest) -> str:
    """Which option gives the content: manifest, manifest_path or version (exactly one of them)."""
    given = [
        option
        for option, value in (
            ("manifest", request.manifest),
            ("manifest_path", request.manifest_path or None),
            ("version", request.version),
        )
        if value is not None
    ]
    if len(given) > 1:
        raise ConfigurationError(f"{' and '.join(given)} are mutually exclusive; give one of them")
    if not given:
        raise ConfigurationError(
            "state=present needs manifest or manifest_path (the deployment manifest), or version (a stored version "
            "of name)"
        )
    return given[0]


def _check_version(request: DeploymentRequest) -> str:
    version = request.version
    if not isinstance(version, str) or not VERSION.fullmatch(version):
        raise ConfigurationError(
            f"version: {version!r} is not a version; give the {VERSION_LENGTH} hexadecimal digits after '<name>-' in "
            "the id of a stored version (iothub_deployment_info lists them)"
        )
    return version


def stored_content(name: str, version: str, configurations: list) -> dict:
    """The content IoT Hub holds for version ``version`` of ``name``, or an error naming the stored versions."""
    wanted = deployment_id(name, version)
    versions = versions_of(configurations, name)
    for record in versions:
        if record["id"] == wanted:
            return _modules_content(record)
    stored = ", ".join(f"{(record.get('labels') or {}).get(VERSION_LABEL)}" for record in reversed(versions))
    raise ConfigurationError(
        f"version: IoT Hub holds no version {version} of {name}"
        + (f"; its stored versions, newest first: {stored}" if stored else "; it holds no version of it at all")
        + ". Give one of them, or the manifest"
    )


def _manifest(request: DeploymentRequest, source: str, configurations) -> dict:
    if source == "manifest":
        return modules_content_of(request.manifest, "manifest")
    if source == "manifest_path":
        return modules_content_of(read_manifest_file(request.manifest_path), "manifest_path")
    return copy.deepcopy(stored_content(request.name, _check_version(request), configurations or []))


def prepare(request: DeploymentRequest, configurations: list | None = None) -> Desired | None:
    """Check every option before anything is sent; None for state=absent (only the name matters then).

    ``configurations`` (the hub's, as listed) are needed only with ``version``: the content is the stored one.
    """
    if request.state not in STATES:
        raise ConfigurationError(f"state: must be one of {', '.join(STATES)}, got {request.state!r}")
    name = check_name(request.name)
    if request.state == "absent":
        return None
    if request.remove_superseded not in REMOVE_SUPERSEDED:
        raise ConfigurationError(
            f"remove_superseded: must be one of {', '.join(REMOVE_SUPERSEDED)}, got {request.remove_superseded!r}"
        )
    priority = request.priority
    if isinstance(priority, bool) or not isinstance(priority, int) or priority < 0:
        raise ConfigurationError(f"priority: must be a whole number of 0 or more, got {priority!r}")
    target = _check_target(request)
    labels = _check_labels(request.labels)
    metrics = _check_metrics(request.metrics)
    option = _content_source(request)
    if option == "version":
        _check_version(request)
    modules_content = _manifest(request, option, configurations)
    layered = bool(request.layered)
    if option == "version":
        stored_layered = is_layered(modules_content)
        if request.layered is not None and layered != stored_layered:
            raise ConfigurationError(
                f"layered: version {request.version} of {name} is {'a layered' if stored_layered else 'a standard'} "
                f"deployment; leave layered unset with version, or set it to {str(stored_layered).lower()}"
            )
        layered = stored_layered
    check_modules_content(modules_content, layered=layered, option=option)
    version = content_version(modules_content, name)
    return Desired(
        name=name,
        version=version,
        configuration_id=deployment_id(name, version),
        modules_content=modules_content,
        layered=layered,
        target_condition=target,
        priority=priority,
        labels={**labels, NAME_LABEL: name, VERSION_LABEL: version},
        metrics=metrics,
    )


# ---- reading the hub ---------------------------------------------------------------------------------------


def _modules_content(record: dict) -> dict:
    return ((record or {}).get("content") or {}).get("modulesContent") or {}


def is_version_of(record: dict, name: str) -> bool:
    """A configuration this module made for ``name``: an edge deployment whose labels and id agree."""
    labels = record.get("labels") or {}
    return (
        bool(_modules_content(record))
        and labels.get(NAME_LABEL) == name
        and version_of_id(name, record.get("id") or "") == labels.get(VERSION_LABEL)
    )


def versions_of(configurations: list, name: str) -> list:
    """The versions of ``name``, oldest first."""
    found = [record for record in configurations if is_version_of(record, name)]
    return sorted(found, key=lambda record: (record.get("createdTimeUtc") or "", record.get("id")))


def settings(record: dict) -> dict:
    """What can change in place, read as the hub answers it (absent values read as the hub's defaults)."""
    return {
        "targetCondition": record.get("targetCondition") or "",
        "priority": record.get("priority") or 0,
        "labels": dict(record.get("labels") or {}),
        "metrics": dict((record.get("metrics") or {}).get("queries") or {}),
    }


def version_view(record: dict) -> dict:
    """One version in a diff: its settings and what its content deploys (never the content: it may hold registry
    credentials)."""
    content = _modules_content(record)
    return {
        **settings(record),
        "version": (record.get("labels") or {}).get(VERSION_LABEL),
        "layered": is_layered(content),
        "modules": module_names(content),
    }


def without_content(record: dict | None) -> dict | None:
    """The hub's answer without ``content`` (registry credentials live there)."""
    if record is None:
        return None
    return {key: value for key, value in record.items() if key != "content"}


# ---- takeover ----------------------------------------------------------------------------------------------


def targeted_query(target_condition: str) -> str | None:
    """The devices an edge deployment targets (the hub's targetedCount query, with the condition in parentheses so
    that an OR in it cannot escape the AND); None for an empty condition, which targets nothing."""
    condition = (target_condition or "").strip()
    if not condition:
        return None
    if condition == "*":
        return "SELECT deviceId FROM devices WHERE capabilities.iotEdge = true"
    return f"SELECT deviceId FROM devices WHERE capabilities.iotEdge = true AND ({condition})"


def applied_query(configuration_id: str) -> str:
    """The devices whose $edgeAgent has the deployment applied (the hub's appliedCount query)."""
    return (
        f"SELECT deviceId FROM devices.modules WHERE moduleId = '{EDGE_AGENT}' "
        f"AND configurations.[[{configuration_id}]].status = '{APPLIED}'"
    )


def _device_ids(client, query: str | None, page_size: int) -> set:
    if query is None:
        return set()
    return {row.get("deviceId") for row in client.query_rows(query, page_size) if row.get("deviceId")}


def _shown(device_ids) -> str:
    ordered = sorted(device_ids)
    more = f" and {len(ordered) - SHOWN_DEVICES} more" if len(ordered) > SHOWN_DEVICES else ""
    return ", ".join(ordered[:SHOWN_DEVICES]) + more


def outranks(old: dict, new: dict) -> bool:
    """Whether ``old`` wins over ``new`` on a device both target: higher priority, or the same and created later."""
    old_rank = (old.get("priority") or 0, old.get("createdTimeUtc") or "")
    new_rank = (new.get("priority") or 0, new.get("createdTimeUtc") or "")
    return old_rank > new_rank


@dataclass
class Takeover:
    """The device sets that decide whether ``new`` has taken over from an older version."""

    targeted_by_old: set
    targeted_by_new: set
    applied_new: set
    applied_old: set

    @property
    def waiting(self) -> set:
        """Devices both versions target that do not apply the new one yet."""
        return (self.targeted_by_old & self.targeted_by_new) - self.applied_new

    @property
    def outside(self) -> set:
        """Devices that still apply the old version and that the new one does not target."""
        return self.applied_old - self.targeted_by_new


def read_takeover(client, old: dict, new: dict, page_size: int, cache: dict) -> Takeover:
    def ids(query):
        if query not in cache:
            cache[query] = _device_ids(client, query, page_size)
        return cache[query]

    return Takeover(
        targeted_by_old=ids(targeted_query(old.get("targetCondition"))),
        targeted_by_new=ids(targeted_query(new.get("targetCondition"))),
        applied_new=ids(applied_query(new["id"])),
        applied_old=ids(applied_query(old["id"])),
    )


def supersede_reason(takeover: Takeover, old: dict, new: dict) -> tuple:
    """(remove, reason) for an older version under ``when_taken_over``.

    Taken over: every device that both versions target applies the new one (a device the new version does not
    target does not hold the old one back, but is named: it keeps its modules, unmanaged).
    """
    waiting = takeover.waiting
    if waiting:
        reason = (
            f"kept: {len(waiting)} device(s) that both versions target do not apply {new['id']} yet ({_shown(waiting)})"
        )
        if not is_layered(_modules_content(old)) and outranks(old, new):
            reason += (
                f"; {old['id']} outranks it (priority {old.get('priority') or 0} vs {new.get('priority') or 0}, ties go "
                "to the newer), so give the new version a higher priority"
            )
        return False, reason
    reason = f"removed: {new['id']} has taken over every device both target"
    if not takeover.targeted_by_old & takeover.targeted_by_new:
        reason = f"removed: no device that {new['id']} targets depends on it"
    if takeover.outside:
        reason += (
            f"; it still applied to {len(takeover.outside)} device(s) outside the new target ({_shown(takeover.outside)}), "
            "which keep their modules (deleting a deployment removes no module)"
        )
    return True, reason


# ---- errors ------------------------------------------------------------------------------------------------

_HINTS = (
    (
        ("InvalidConfigurationContent", 400402),
        "manifest: IoT Hub refused the deployment's content: {message}",
    ),
    (
        ("InvalidConfigurationTargetCondition", 400401),
        "target_condition: IoT Hub refused the target condition {target!r}: {message}",
    ),
    (
        ("InvalidConfigurationCustomMetricsQuery", 400404),
        "metrics: IoT Hub refused a custom metric query: {message}",
    ),
    (
        ("CannotModifyImmutableConfigurationContent", 400403),
        "IoT Hub holds other content under {id} than this manifest (content cannot change, so the module never sends "
        "other content to an existing id: was it edited by another tool?). Delete {id} and re-run: {message}",
    ),
    (
        ("ConfigurationCountLimitExceeded", 413101, "IotHubQuotaExceeded", 403002),
        "IoT Hub holds as many deployments as it allows (100 per paid hub): remove unused ones (older versions of "
        "this name go once the new one has taken over, or set remove_superseded=always): {message}",
    ),
    (
        ("ConfigurationAlreadyExists", 409401),
        "{id} was created by another client during this run with other settings; re-run to update it: {message}",
    ),
)


def explain(error: ApiError, desired: Desired | None) -> ApiError:
    """The hub's refusal, led by the option to fix; unknown errors pass unchanged."""
    codes = {error.error_code, *((error.details or {}).values())} - {None}
    codes |= {str(code) for code in codes}
    for known, template in _HINTS:
        if codes & {*known, *(str(code) for code in known)}:
            message = template.format(
                message=str(error),
                target=desired.target_condition if desired else "",
                id=desired.configuration_id if desired else "the deployment",
            )
            return error.reworded(message)
    return error


# ---- writes ------------------------------------------------------------------------------------------------


def _create(client, desired: Desired) -> dict:
    """Create the version. A 409 is fine when the hub holds it as wanted (our own write whose answer was lost and
    that the retry policy sent again, or another run with the same input)."""
    try:
        return client.create_configuration(desired.body())
    except ApiError as error:
        if error.status != 409:
            raise explain(error, desired) from None
        record = client.get_configuration(desired.configuration_id)
        if record is not None and is_version_of(record, desired.name) and settings(record) == _wanted(desired):
            return record
        raise explain(error, desired) from None


def _wanted(desired: Desired) -> dict:
    return settings(desired.body())


def _update(client, current: dict, desired: Desired) -> dict:
    """Change the settings in place with If-Match; the content sent is the content the hub holds."""
    attempt = 1
    while True:
        body = {**desired.body(), "content": current.get("content")}
        try:
            return client.update_configuration(body, current.get("etag"))
        except ApiError as error:
            if error.status != 412:
                raise explain(error, desired) from None
            current = client.get_configuration(desired.configuration_id)
            if current is None:
                raise ApiError(
                    f"{desired.configuration_id} was deleted by another client during this run; re-run to create it",
                    status=404,
                    operation=error.operation,
                ) from None
            if settings(current) == _wanted(desired):
                return current
            if attempt >= WRITE_ATTEMPTS:
                raise error.reworded(
                    f"{desired.configuration_id} changed between read and write twice (412): another client is "
                    "updating it at the same time; re-run when it has finished"
                ) from None
            attempt += 1


def _delete(client, record: dict, etag) -> str | None:
    """Delete one version; None when gone, else why it was kept (it changed during the run)."""
    try:
        client.delete_configuration(record["id"], etag)
    except ApiError as error:
        if error.status == 404:
            return None
        if error.status == 412:
            return "kept: it was changed by another client during this run (412); re-run to decide again"
        raise
    return None


# ---- the iothub_deployment core ----------------------------------------------------------------------------


def _remove_all(client, name: str, versions: list, *, check_mode: bool) -> dict:
    removed = []
    for record in versions:
        if not check_mode:
            # Every version goes, whatever changed in it meanwhile (If-Match: *).
            _delete(client, record, None)
        removed.append(record["id"])
    return {
        "changed": bool(removed),
        "name": name,
        "id": None,
        "version": None,
        "created": [],
        "updated": [],
        "removed": removed,
        "kept": [],
        "superseded": [],
        "configuration": None,
        "modules": [],
        "layered": None,
        "diff": {
            "before": {"versions": {record["id"]: version_view(record) for record in versions}},
            "after": {"versions": {}},
        },
    }


def _predicted(current: dict | None, desired: Desired) -> dict:
    """What the hub would hold after the write (check mode): the body, on top of what it holds now."""
    return {**(current or {}), **desired.body()}


def _decide(client, request, desired, record, new_record, exists: bool, cache: dict) -> tuple:
    """(remove, reason) for one older version."""
    if request.remove_superseded == "never":
        return False, "kept: remove_superseded is never"
    if request.remove_superseded == "always":
        return True, "removed: remove_superseded is always"
    if not exists:
        return False, (
            f"kept: {desired.configuration_id} does not exist yet (check mode); the older version goes once it has "
            "taken over"
        )
    takeover = read_takeover(client, record, new_record, request.page_size, cache)
    return supersede_reason(takeover, record, new_record)


def ensure_deployment(client, request: DeploymentRequest, *, check_mode: bool) -> dict:
    """The iothub_deployment core: one deployment name to the wanted version, settings and set of versions."""
    if request.state == "present" and request.version is not None:
        # The options are checked before the hub is read; the content then comes from the hub.
        _content_source(request)
        _check_version(request)
        check_name(request.name)
        configurations = client.list_configurations()
        desired = prepare(request, configurations)
    else:
        desired = prepare(request)
        configurations = client.list_configurations()
    versions = versions_of(configurations, request.name)
    if desired is None:
        return _remove_all(client, request.name, versions, check_mode=check_mode)

    current = next((record for record in versions if record["id"] == desired.configuration_id), None)
    if current is None and any(record.get("id") == desired.configuration_id for record in configurations):
        raise ConfigurationError(
            f"name: IoT Hub already has a configuration {desired.configuration_id} that this module did not make (its "
            f"labels {NAME_LABEL}/{VERSION_LABEL} do not say so); delete it or choose another name"
        )
    created, updated = [], []
    if current is None:
        after = _predicted(None, desired) if check_mode else _create(client, desired)
        created.append(desired.configuration_id)
    elif settings(current) != _wanted(desired):
        after = _predicted(current, desired) if check_mode else _update(client, current, desired)
        updated.append(desired.configuration_id)
    else:
        after = current

    superseded, cache = [], {}
    exists = current is not None or not check_mode
    for record in versions:
        if record["id"] == desired.configuration_id:
            continue
        remove, reason = _decide(client, request, desired, record, after, exists, cache)
        if remove and not check_mode:
            refused = _delete(client, record, record.get("etag"))
            if refused:
                remove, reason = False, refused
        superseded.append(
            {
                "id": record["id"],
                "version": (record.get("labels") or {}).get(VERSION_LABEL),
                "action": "removed" if remove else "kept",
                "reason": reason,
            }
        )
    removed = [entry["id"] for entry in superseded if entry["action"] == "removed"]
    kept = [entry for entry in superseded if entry["action"] == "kept"]
    if not check_mode and (created or updated or removed):
        # The answer to a PUT has no device-reported metrics, and a removal can change what applies: read it again.
        after = client.get_configuration(desired.configuration_id) or after

    before_versions = {record["id"]: version_view(record) for record in versions}
    after_versions = {key: value for key, value in before_versions.items() if key not in removed}
    after_versions[desired.configuration_id] = version_view(after)
    return {
        "changed": bool(created or updated or removed),
        "name": desired.name,
        "id": desired.configuration_id,
        "version": desired.version,
        "created": created,
        "updated": updated,
        "removed": removed,
        "kept": kept,
        "superseded": superseded,
        "configuration": without_content(after),
        "modules": module_names(desired.modules_content),
        "layered": desired.layered,
        "diff": {"before": {"versions": before_versions}, "after": {"versions": after_versions}},
    }


# ---- the iothub_deployment_info core -----------------------------------------------------------------------


@dataclass
class DeploymentInfoRequest:
    name: str | None = None
    ids: list = field(default_factory=list)
    devices: bool = False
    page_size: int = QUERY_PAGE_SIZE


def deployment_view(record: dict) -> dict:
    """One deployment as iothub_deployment_info returns it (content summarised, never returned)."""
    content = _modules_content(record)
    labels = record.get("labels") or {}
    managed = labels.get(NAME_LABEL) is not None and is_version_of(record, labels[NAME_LABEL])
    return {
        "id": record.get("id"),
        "name": labels.get(NAME_LABEL) if managed else None,
        "version": labels.get(VERSION_LABEL) if managed else None,
        "layered": is_layered(content),
        "modules": module_names(content),
        "images": module_images(content),
        "priority": record.get("priority") or 0,
        "target_condition": record.get("targetCondition") or "",
        "labels": labels,
        "created_time_utc": record.get("createdTimeUtc"),
        "last_updated_time_utc": record.get("lastUpdatedTimeUtc"),
        "etag": record.get("etag"),
        "system_metrics": dict((record.get("systemMetrics") or {}).get("results") or {}),
        "metrics": dict((record.get("metrics") or {}).get("results") or {}),
        "metric_queries": dict((record.get("metrics") or {}).get("queries") or {}),
    }


def _runtime_status(section) -> dict:
    section = section if isinstance(section, dict) else {}
    return {name: module.get("runtimeStatus") for name, module in section.items() if isinstance(module, dict)}


def device_view(row: dict, selected: set) -> dict | None:
    """A ``$edgeAgent`` module twin -> which of the selected deployments target and apply, and what it reports."""
    statuses = {
        configuration_id: (entry or {}).get("status")
        for configuration_id, entry in (row.get("configurations") or {}).items()
        if configuration_id in selected
    }
    if not statuses:
        return None
    properties = row.get("properties") or {}
    desired = properties.get("desired") or {}
    reported = strip_metadata(properties.get("reported"))
    last_version = reported.get("lastDesiredVersion")
    return {
        "device_id": row.get("deviceId"),
        "deployments": statuses,
        "applied": sorted(key for key, status in statuses.items() if status == APPLIED),
        "desired_version": desired.get("$version"),
        "last_desired_version": last_version,
        "last_desired_status": reported.get("lastDesiredStatus"),
        "in_sync": last_version is not None and last_version == desired.get("$version"),
        "connection_state": row.get("connectionState"),
        "system_modules": _runtime_status(reported.get("systemModules")),
        "modules": _runtime_status(reported.get("modules")),
    }


def deployment_info(client, request: DeploymentInfoRequest) -> dict:
    """Deployments (all edge deployments, the versions of ``name``, or the given ids) with their metrics; with
    ``devices``, each targeted device's view from its ``$edgeAgent`` twin (one paged module-twin query)."""
    if request.name is not None and request.ids:
        raise ConfigurationError("name and ids are mutually exclusive; give one of them")
    missing = []
    if request.ids:
        if not all(isinstance(item, str) and item for item in request.ids):
            raise ConfigurationError("ids: must be non-empty strings")
        found = []
        for configuration_id in dict.fromkeys(request.ids):
            record = client.get_configuration(configuration_id)
            if record is None:
                missing.append(configuration_id)
            else:
                found.append(record)
    elif request.name is not None:
        found = versions_of(client.list_configurations(), check_name(request.name))
    else:
        found = [record for record in client.list_configurations() if _modules_content(record)]
    views = [deployment_view(record) for record in found]
    result = {"changed": False, "deployments": views, "missing": missing}
    if request.devices:
        selected = {view["id"] for view in views}
        rows = (
            client.query_rows(f"SELECT * FROM devices.modules WHERE moduleId = '{EDGE_AGENT}'", request.page_size)
            if selected
            else []
        )
        devices = [view for view in (device_view(row, selected) for row in rows) if view is not None]
        result["devices"] = sorted(devices, key=lambda view: view["device_id"] or "")
    return result


__all__ = (
    "MANAGED_LABELS",
    "NAME_LABEL",
    "REMOVE_SUPERSEDED",
    "STATES",
    "VERSION_LABEL",
    "DeploymentInfoRequest",
    "DeploymentRequest",
    "IoTHubDeployments",
    "Takeover",
    "applied_query",
    "deployment_info",
    "deployment_view",
    "device_view",
    "ensure_deployment",
    "explain",
    "is_version_of",
    "load_configuration_sdk",
    "prepare",
    "settings",
    "stored_content",
    "supersede_reason",
    "targeted_query",
    "versions_of",
)
