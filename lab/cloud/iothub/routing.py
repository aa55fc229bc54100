"""IoT Hub routing table (operation names = operationIds in iothub-data-plane/2021-04-12/service.json)."""

from __future__ import annotations

from lab.cloud.http import Route

READ = "RegistryRead"
WRITE = "RegistryWrite"
TWIN_READ = "RegistryRead|ServiceConnect"
TWIN_WRITE = "ServiceConnect"

ROUTES = [
    Route("POST", "/devices/query", "Query_GetTwins", "query", TWIN_READ),
    Route("GET", "/devices", "Devices_GetDevices", "list_devices", READ),
    Route("GET", "/devices/{device_id}", "Devices_GetIdentity", "get_device", READ),
    Route("PUT", "/devices/{device_id}", "Devices_CreateOrUpdateIdentity", "put_device", WRITE),
    Route("DELETE", "/devices/{device_id}", "Devices_DeleteIdentity", "delete_device", WRITE),
    Route("GET", "/devices/{device_id}/modules", "Modules_GetModulesOnDevice", "list_modules", READ),
    Route("GET", "/devices/{device_id}/modules/{module_id}", "Modules_GetIdentity", "get_module", READ),
    Route("PUT", "/devices/{device_id}/modules/{module_id}", "Modules_CreateOrUpdateIdentity", "put_module", WRITE),
    Route("DELETE", "/devices/{device_id}/modules/{module_id}", "Modules_DeleteIdentity", "delete_module", WRITE),
    Route("GET", "/twins/{device_id}", "Devices_GetTwin", "get_twin", TWIN_READ),
    Route("PATCH", "/twins/{device_id}", "Devices_UpdateTwin", "patch_twin", TWIN_WRITE),
    Route("PUT", "/twins/{device_id}", "Devices_ReplaceTwin", "replace_twin", TWIN_WRITE),
    Route("GET", "/twins/{device_id}/modules/{module_id}", "Modules_GetTwin", "get_module_twin", TWIN_READ),
    Route("PATCH", "/twins/{device_id}/modules/{module_id}", "Modules_UpdateTwin", "patch_module_twin", TWIN_WRITE),
    Route("PUT", "/twins/{device_id}/modules/{module_id}", "Modules_ReplaceTwin", "replace_module_twin", TWIN_WRITE),
    Route("POST", "/configurations/testQueries", "Configuration_TestQueries", "test_queries", READ),
    Route("GET", "/configurations", "Configuration_GetConfigurations", "list_configurations", READ),
    Route("GET", "/configurations/{configuration_id}", "Configuration_Get", "get_configuration", READ),
    Route("PUT", "/configurations/{configuration_id}", "Configuration_CreateOrUpdate", "put_configuration", WRITE),
    Route("DELETE", "/configurations/{configuration_id}", "Configuration_Delete", "delete_configuration", WRITE),
    Route(
        "POST",
        "/devices/{device_id}/applyConfigurationContent",
        "Configuration_ApplyOnEdgeDevice",
        "apply_content",
        WRITE,
    ),
    Route("GET", "/statistics/devices", "Statistics_GetDeviceStatistics", "device_statistics", READ),
    Route("GET", "/statistics/service", "Statistics_GetServiceStatistics", "service_statistics", "ServiceConnect"),
    # Known to the SDK but outside the lab's scope: answered 501 in the hub's envelope (Azurite style).
    Route("POST", "/devices", "BulkRegistry_UpdateRegistry", "not_implemented", WRITE),
    Route("POST", "/twins/{device_id}/methods", "Devices_InvokeMethod", "not_implemented", "ServiceConnect"),
    Route(
        "POST",
        "/twins/{device_id}/modules/{module_id}/methods",
        "Modules_InvokeMethod",
        "not_implemented",
        "ServiceConnect",
    ),
    Route(
        "DELETE",
        "/devices/{device_id}/commands",
        "CloudToDeviceMessages_PurgeCloudToDeviceMessageQueue",
        "not_implemented",
    ),
    Route("POST", "/jobs/create", "Jobs_CreateImportExportJob", "not_implemented", WRITE),
    Route("GET", "/jobs", "Jobs_GetImportExportJobs", "not_implemented", READ),
    Route("GET", "/digitaltwins/{device_id}", "DigitalTwin_GetDigitalTwin", "not_implemented", READ),
]

# The IoT Edge runtime (aziot-identityd) manages its module identities with its own device credentials.
DEVICE_CREDENTIAL_OPERATIONS = frozenset(
    {"Modules_GetModulesOnDevice", "Modules_GetIdentity", "Modules_CreateOrUpdateIdentity", "Modules_DeleteIdentity"}
)
