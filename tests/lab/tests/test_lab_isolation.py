"""What a task does on a lab node stays in that node: its own files, hostname and OS identity."""

from __future__ import annotations

import os
import secrets


def test_files_written_on_a_node_stay_in_that_node(main_lab):
    first, second = main_lab.ec2_ids[0], main_lab.ec2_ids[1]
    token = secrets.token_hex(8)
    etc_file, tmp_file = f"/etc/lab-isolation-{token}", f"/tmp/lab-isolation-{token}"

    written = main_lab.run(first, f"echo etc-{token} > {etc_file}", f"echo tmp-{token} > {tmp_file}", "echo written")
    assert written["Status"] == "Success", written
    assert written["ResponseCode"] == 0
    assert written["StandardOutputContent"] == "written\n"

    same = main_lab.run(first, f"cat {etc_file} {tmp_file}")
    assert same["Status"] == "Success", same
    assert same["StandardOutputContent"] == f"etc-{token}\ntmp-{token}\n"

    other = main_lab.run(second, f"cat {etc_file}; echo etc=$?; cat {tmp_file}; echo tmp=$?")
    assert other["StandardOutputContent"] == "etc=1\ntmp=1\n"
    assert "No such file or directory" in other["StandardErrorContent"]

    assert not os.path.exists(etc_file)
    assert not os.path.exists(tmp_file)


def test_hostname_is_the_nodes_own(main_lab):
    hostnames = {}
    for node in main_lab.ec2_ids[:2]:
        private_ip = main_lab.instance(node)["PrivateIpAddress"]
        expected = "ip-" + private_ip.replace(".", "-") + ".ec2.internal"
        assert main_lab.run_ok(node, "hostname") == expected + "\n"
        hostnames[node] = expected
    assert len(set(hostnames.values())) == 2
    assert os.uname().nodename not in hostnames.values()


def test_os_release_is_amazon_linux_2023(main_lab):
    text = main_lab.run_ok(main_lab.ec2_ids[0], "cat /etc/os-release")
    fields = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    assert fields["NAME"] == '"Amazon Linux"'
    assert fields["VERSION_ID"] == '"2023"'
    assert fields["ID"] == '"amzn"'
    assert fields["PRETTY_NAME"].startswith('"Amazon Linux 2023')
