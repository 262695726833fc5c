"""Training environments as OCI images, taken in by digest and unpacked safely.

- :mod:`.reference`: ``REGISTRY/NAME@sha256:DIGEST`` references (a tag alone is refused);
- :mod:`.media`: image manifests, image indexes and image configs (strict, bounded);
- :mod:`.blobs`: writing a blob to the scratch disk while checking its digest;
- :mod:`.registry`: the OCI distribution API client (pull by digest);
- :mod:`.archive`: OCI image-layout (and docker-archive) tar streams;
- :mod:`.unpack`: applying layers to a root file system without leaving it;
- :mod:`.environment`: the whole intake, from either source to an :class:`Environment`.
"""
