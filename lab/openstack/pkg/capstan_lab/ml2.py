"""An ML2 mechanism driver that binds every port without an agent.

There is no data plane in the lab: a port is bound on whatever host Nova asks for, with
vif_type ``ovs`` (what a real ML2/OVS cloud answers), and is ACTIVE at once, so Nova's fake
driver, Neutron's IPAM, quotas, floating IPs and routers all run for real while no packet
ever moves.
"""
from neutron_lib.api.definitions import portbindings
from neutron_lib import constants
from neutron_lib.plugins.ml2 import api
from oslo_log import log as logging

LOG = logging.getLogger(__name__)


class LabMechanismDriver(api.MechanismDriver):

    def initialize(self):
        LOG.info("capstan_lab mechanism driver: binding ports without an agent")

    @property
    def connectivity(self):
        return portbindings.CONNECTIVITY_L2

    def bind_port(self, context):
        for segment in context.segments_to_bind:
            context.set_binding(
                segment[api.ID],
                portbindings.VIF_TYPE_OVS,
                {portbindings.CAP_PORT_FILTER: True,
                 portbindings.OVS_HYBRID_PLUG: False},
                status=constants.PORT_STATUS_ACTIVE)
            LOG.debug("capstan_lab bound port %s on host %s (segment %s)",
                      context.current['id'], context.host, segment[api.ID])
            return
