"""The Open Inference Protocol over gRPC: the ``inference.GRPCInferenceService`` messages and stubs
that Triton's client package ships (``tritonclient.grpc``: the protocol's service with Triton's
extensions, which answer UNIMPLEMENTED here), served beside the HTTP app on ``[grpc] port`` and
answered through the same pipeline as every other protocol."""
