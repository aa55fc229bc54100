# Copyright (c) edgefleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import errno
import types

import pytest

from ansible_collections.edgefleet.iotedge.plugins.module_utils._module import path_error

SPEC = {"ca_path": {"type": "path"}, "path": {"type": "path"}, "key_type": {"type": "str"}}


def module_with(**params):
    return types.SimpleNamespace(argument_spec=SPEC, params={"ca_path": None, "path": None, "key_type": None, **params})


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("/srv/pki/ca", "path: /srv/pki/ca: Not a directory"),
        ("/srv/pki/ca/root.key.pem", "path: /srv/pki/ca/root.key.pem: Not a directory"),
        # The longest option that holds the file wins: the identities under the CA directory are `path`'s.
        ("/srv/pki/ids/edge-01/identity.key.pem", "path: /srv/pki/ids/edge-01/identity.key.pem: Not a directory"),
        ("/srv/pki/root.cert.pem", "ca_path: /srv/pki/root.cert.pem: Not a directory"),
        # A sibling that only shares the text of the prefix is not under the option.
        ("/srv/pki-old/x", "/srv/pki-old/x: Not a directory"),
        (None, "a file: Not a directory"),
    ],
)
def test_a_file_error_is_led_by_the_path_option_it_lies_under(filename, expected):
    module = module_with(ca_path="/srv/pki/", path="/srv/pki/ids" if "ids" in (filename or "") else "/srv/pki/ca")
    error = OSError(errno.ENOTDIR, "Not a directory", filename)
    assert path_error(module, error) == f"{expected}; check the path and its permissions"
