"""Nova's fake virt driver with a size the lab chooses.

Nova loads compute drivers only from the ``nova.virt`` package, so lab/openstack-up drops
the one-line shim ``nova/virt/capstan_lab.py`` (``from capstan_lab.virt import *``) into the
lab venv and configures ``compute_driver = capstan_lab.LabFakeDriver``. Each nova-compute
process reads its size from the environment (set per host by lab/openstack-up), so "No valid
host was found" is easy to provoke.

The base is ``FakeDriverWithoutFakeNodes``: one node per host named after ``[DEFAULT] host``,
with its node UUID persisted in ``state_path/compute_id`` as real drivers do. (Plain
``FakeDriver`` makes up node UUIDs in every process, and nova-compute then refuses to restart:
"No local node identity found, but this is not our first startup on this host".)
"""
import os

from nova.virt import fake

__all__ = ["LabFakeDriver"]


class LabFakeDriver(fake.FakeDriverWithoutFakeNodes):
    vcpus = int(os.environ.get("CAPSTAN_LAB_VCPUS", "8"))
    memory_mb = int(os.environ.get("CAPSTAN_LAB_MEMORY_MB", "16384"))
    local_gb = int(os.environ.get("CAPSTAN_LAB_DISK_GB", "200"))

    def get_host_uptime(self):
        # FakeDriver raises NotImplementedError, which `openstack hypervisor show` triggers
        return " 00:00:00 up 1 day,  0:00,  0 users,  load average: 0.00, 0.00, 0.00"
