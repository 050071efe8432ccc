"""mlrollout's data plane: the ONNX model server and the traffic gateway."""
