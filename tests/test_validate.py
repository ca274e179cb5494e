"""`emrboot validate FILE`: exit 0 and `FILE: valid`, or exit 2 and `FILE:LINE:COL: message` lines."""
import re
import shutil
from pathlib import Path

import pytest

from helpers import assert_no_crash, emrboot, offline_env

DATA = Path(__file__).resolve().parent / "data"
SHA = "0123456789abcdef" * 4


def validate(tmp_path, text, name="emrboot.toml"):
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    cp = emrboot("validate", path, env=offline_env(tmp_path))
    assert_no_crash(cp)
    return cp, path


def error_lines(cp, path):
    """The error lines, checked for shape: every stdout line is `PATH:LINE:COL: message`."""
    assert cp.returncode == 2, f"exit {cp.returncode}, expected 2\n{cp.stdout}\n{cp.stderr}"
    lines = cp.stdout.splitlines()
    assert lines, f"no error lines on stdout\n{cp.stderr}"
    shape = re.compile(re.escape(str(path)) + r":(\d+):(\d+): \S")
    for line in lines:
        assert shape.match(line), f"not FILE:LINE:COL: message: {line!r}"
    return lines


def assert_error(tmp_path, text, line, col, *phrases):
    cp, path = validate(tmp_path, text)
    lines = error_lines(cp, path)
    prefix = f"{path}:{line}:{col}: "
    hits = [ln for ln in lines if ln.startswith(prefix)]
    assert hits, f"no error at {line}:{col}; got:\n{cp.stdout}"
    for phrase in phrases:
        assert any(phrase in h for h in hits), f"{phrase!r} not in the error at {line}:{col}:\n{cp.stdout}"
    return lines


def assert_valid(tmp_path, text):
    cp, path = validate(tmp_path, text)
    assert cp.returncode == 0, f"exit {cp.returncode}\n{cp.stdout}\n{cp.stderr}"
    assert cp.stdout.strip() == f"{path}: valid"


# -- valid configs -----------------------------------------------------------------------------------

def test_design_example_is_valid(tmp_path):
    path = tmp_path / "design-example.toml"
    shutil.copyfile(DATA / "design-example.toml", path)
    cp = emrboot("validate", path, env=offline_env(tmp_path))
    assert_no_crash(cp)
    assert cp.returncode == 0, f"{cp.stdout}\n{cp.stderr}"
    assert cp.stdout.strip() == f"{path}: valid"


def test_relative_path_is_echoed_as_given(tmp_path):
    (tmp_path / "c.toml").write_text('[install]\ntimezone = "UTC"\n')
    cp = emrboot("validate", "c.toml", env=offline_env(tmp_path), cwd=tmp_path)
    assert (cp.returncode, cp.stdout.strip()) == (0, "c.toml: valid"), cp.stderr
    (tmp_path / "bad.toml").write_text('[install]\ntimezone = 5\n')
    cp = emrboot("validate", "bad.toml", env=offline_env(tmp_path), cwd=tmp_path)
    assert cp.returncode == 2
    assert cp.stdout.startswith("bad.toml:2:12: "), cp.stdout


def test_minimal_configs_are_valid(tmp_path):
    assert_valid(tmp_path, '[install]\ntimezone = "Asia/Seoul"\n')
    assert_valid(tmp_path, '[efs]\ndns_name = "fs-12345678.efs.ap-northeast-2.amazonaws.com"\n'
                           'mount_point = "/x"\nroles = ["core", "Task"]\nrequired = false\n')


def test_http_allowed_with_allow_http(tmp_path):
    assert_valid(tmp_path, '[install]\nallow_http = true\n[install.pip]\n'
                           'requirements = "http://127.0.0.1:8000/requirements.txt"\n')


def test_fifty_tags_is_the_limit(tmp_path):
    fifty = "".join(f'T{i} = "v"\n' for i in range(50))
    assert_valid(tmp_path, "[tags.set]\n" + fifty)
    forty_nine = "".join(f'T{i} = "v"\n' for i in range(49))
    assert_valid(tmp_path, '[tags]\nname_suffix = "role"\n[tags.set]\n' + forty_nine)


# -- one bad case each ---------------------------------------------------------------------------------

def test_unknown_key(tmp_path):
    assert_error(tmp_path, '[install]\npackges = ["jq"]\n', 2, 1, "unknown key `install.packges`")


def test_unknown_table(tmp_path):
    assert_error(tmp_path, '[install]\ntimezone = "UTC"\n\n[efs_mount]\nmount_point = "/x"\n',
                 4, 2, "unknown key `efs_mount`")


def test_unknown_nested_key(tmp_path):
    assert_error(tmp_path, '[tags]\nname_suffx = "role"\n', 2, 1, "unknown key `tags.name_suffx`")


def test_wrong_type_string(tmp_path):
    assert_error(tmp_path, '[install]\ntimezone = 5\n', 2, 12,
                 "`install.timezone`", "must be a string, not integer")


def test_wrong_type_boolean(tmp_path):
    assert_error(tmp_path, '[efs]\nfile_system_id = "fs-12345678"\nmount_point = "/x"\nrequired = "yes"\n',
                 4, 12, "`efs.required`", "must be a boolean")


def test_wrong_type_array(tmp_path):
    assert_error(tmp_path, '[install]\npackages = "jq"\n', 2, 12, "`install.packages`", "must be")


def test_bad_sha256(tmp_path):
    text = ('[[install.source]]\nname = "x"\nurl = "https://example.org/x.tar.gz"\n'
            'sha256 = "abc"\nbuild = []\ninstall = []\n')
    assert_error(tmp_path, text, 4, 10, "install.source[0].sha256", "not a sha256")


def test_sha256_with_non_hex_digits(tmp_path):
    text = ('[[install.source]]\nname = "x"\nurl = "https://example.org/x.tar.gz"\n'
            f'sha256 = "{"g" * 64}"\nbuild = []\ninstall = []\n')
    assert_error(tmp_path, text, 4, 10, "not a sha256")


@pytest.mark.parametrize("key", ["aws:cost-center", "AWS:x", "Aws:Name"])
def test_tag_key_starting_with_aws(tmp_path, key):
    assert_error(tmp_path, f'[tags.set]\nProject = "p"\n"{key}" = "x"\n', 3, 1, "starts with `aws:`")


def test_more_than_fifty_tags(tmp_path):
    tags = "".join(f'T{i} = "v"\n' for i in range(51))
    assert_error(tmp_path, '[install]\ntimezone = "UTC"\n[tags.set]\n' + tags, 3, 1, "51 tags", "50")


def test_name_suffix_counts_as_a_tag(tmp_path):
    tags = "".join(f'T{i} = "v"\n' for i in range(50))
    assert_error(tmp_path, '[tags]\nname_suffix = "role"\n[tags.set]\n' + tags, 3, 1, "51 tags", "50")


@pytest.mark.parametrize("ip", ["10.0.0.300", "1.2.3", "10.0.0.10/32", "fe80::1", "eni-1"])
def test_ip_that_does_not_parse(tmp_path, ip):
    text = f'[ip_takeover]\naddress = "{ip}"\nreserved_eni = "eni-0123456789abcdef0"\n'
    assert_error(tmp_path, text, 2, 11, "`ip_takeover.address`", "not an IPv4 address")


def test_unknown_role(tmp_path):
    text = '[efs]\nfile_system_id = "fs-12345678"\nmount_point = "/x"\nroles = ["MASTER", "WORKER"]\n'
    assert_error(tmp_path, text, 4, 20, "`efs.roles`", "unknown role", "WORKER")


@pytest.mark.parametrize("pkg", ["jq; rm -rf /", "jq$(id)", "jq|sh", "`id`", "jq && id", "jq\\nid", "-rf"])
def test_package_name_with_shell_metacharacters(tmp_path, pkg):
    assert_error(tmp_path, f'[install]\npackages = ["{pkg}"]\n', 2, 13, "`install.packages`",
                 "not a package name")


def test_second_package_is_pointed_at(tmp_path):
    assert_error(tmp_path, '[install]\npackages = ["jq", "a;b"]\n', 2, 19, "not a package name")


def test_pip_package_with_shell_metacharacters(tmp_path):
    assert_error(tmp_path, '[install.pip]\npackages = ["x; id"]\n', 2, 13, "`install.pip.packages`",
                 "not a package name")


def test_toml_syntax_error(tmp_path):
    assert_error(tmp_path, '[install]\ntimezone "Asia/Seoul"\n', 2, 10, "TOML")


def test_toml_duplicate_table(tmp_path):
    assert_error(tmp_path, '[install]\ntimezone = "UTC"\n[install]\n', 3, 2, "TOML", "duplicate")


def test_http_url_without_allow_http(tmp_path):
    assert_error(tmp_path, '[install.pip]\nrequirements = "http://example.org/r.txt"\n', 2, 16,
                 "`install.pip.requirements`", "http", "allow_http")


def test_http_source_url_without_allow_http(tmp_path):
    text = ('[[install.source]]\nname = "x"\nurl = "http://example.org/x.tar.gz"\n'
            f'sha256 = "{SHA}"\nbuild = []\ninstall = []\n')
    assert_error(tmp_path, text, 3, 7, "`install.source[0].url`", "allow_http")


def test_allow_http_false_still_refuses(tmp_path):
    assert_error(tmp_path, '[install]\nallow_http = false\n[install.pip]\n'
                           'requirements = "http://example.org/r.txt"\n', 4, 16, "allow_http")


def test_missing_reserved_eni(tmp_path):
    assert_error(tmp_path, '[install]\ntimezone = "UTC"\n\n[ip_takeover]\naddress = "10.0.0.1"\n',
                 4, 1, "`ip_takeover.reserved_eni` is required")


def test_missing_address(tmp_path):
    assert_error(tmp_path, '[ip_takeover]\nreserved_eni = "eni-0123456789abcdef0"\n',
                 1, 1, "`ip_takeover.address` is required")


def test_missing_mount_point(tmp_path):
    assert_error(tmp_path, '[install]\ntimezone = "UTC"\n[efs]\nfile_system_id = "fs-12345678"\n',
                 3, 1, "`efs.mount_point` is required")


def test_efs_with_neither_id_nor_dns_name(tmp_path):
    assert_error(tmp_path, '[efs]\nmount_point = "/x"\n', 1, 1, "file_system_id", "dns_name")


def test_efs_with_both_id_and_dns_name(tmp_path):
    text = ('[install]\ntimezone = "UTC"\n[efs]\nfile_system_id = "fs-12345678"\n'
            'dns_name = "fs-12345678.efs.ap-northeast-2.amazonaws.com"\nmount_point = "/x"\n')
    assert_error(tmp_path, text, 3, 1, "file_system_id", "dns_name", "not both")


def test_time_zone_name_is_checked(tmp_path):
    assert_error(tmp_path, '[install]\ntimezone = "../../etc/passwd"\n', 2, 12, "`install.timezone`")


# -- several errors ------------------------------------------------------------------------------------

def test_every_error_is_reported_sorted_by_position(tmp_path):
    text = ('[install]\n'                                  # 1
            'packges = ["jq"]\n'                           # 2 unknown key
            'timezone = 5\n'                               # 3 wrong type
            '\n'                                           # 4
            '[tags.set]\n'                                 # 5
            '"aws:x" = "y"\n'                              # 6 reserved prefix
            '[ip_takeover]\n'                              # 7
            'address = "1.2.3"\n'                          # 8 bad IP
            'reserved_eni = "eni-0123456789abcdef0"\n'     # 9
            '[efs]\n'                                      # 10
            'file_system_id = "fs-12345678"\n'             # 11
            'mount_point = "/x"\n'                         # 12
            'roles = ["WORKER"]\n'                         # 13 unknown role
            '[bogus]\n')                                   # 14 unknown table
    cp, path = validate(tmp_path, text)
    lines = error_lines(cp, path)
    positions = [tuple(map(int, re.match(re.escape(str(path)) + r":(\d+):(\d+):", ln).groups()))
                 for ln in lines]
    assert positions == sorted(positions), f"not sorted by position:\n{cp.stdout}"
    assert [p[0] for p in positions] == [2, 3, 6, 8, 13, 14], cp.stdout
    for phrase in ("install.packges", "must be a string", "aws:", "not an IPv4 address",
                   "unknown role", "bogus"):
        assert phrase in cp.stdout, f"{phrase!r} missing:\n{cp.stdout}"


def test_missing_file(tmp_path):
    path = tmp_path / "nope.toml"
    cp = emrboot("validate", path, env=offline_env(tmp_path))
    assert_no_crash(cp)
    assert cp.returncode == 2
    assert str(path) in cp.stdout + cp.stderr


def test_non_utf8_file(tmp_path):
    cp, path = validate(tmp_path, b'[install]\ntimezone = "Asia/\xff\xfe"\n')
    assert cp.returncode == 2, cp.stdout + cp.stderr
    assert str(path) in cp.stdout + cp.stderr
