"""Cinder's fake logging volume driver, with image clones that need no block device.

Cinder ships ``cinder.tests.fake_driver.FakeLoggingVolumeDriver`` (it logs instead of
running LVM). Creating a volume from an image still downloads the image and inspects it
through privsep (``sudo cinder-rootwrap ... privsep-helper``) and writes it to the LV's
device path, which the lab does not have. Answering ``clone_image`` with "cloned" (what a
Ceph/RBD backend does for images it can clone) skips the download: the volume becomes
``available`` with the image's Glance metadata, and boot-from-volume works on Nova's fake
driver. Uploading a volume to an image is a no-op in the same spirit.
"""
from cinder.tests import fake_driver


class LabVolumeDriver(fake_driver.FakeLoggingVolumeDriver):

    def clone_image(self, context, volume, image_location, image_meta, image_service):
        return {}, True

    def copy_image_to_volume(self, context, volume, image_service, image_id,
                             disable_sparse=False):
        pass

    def copy_volume_to_image(self, context, volume, image_service, image_meta):
        pass
