/// Conversion of the official Kandinsky 2.0 release files (PyTorch zip checkpoints) into the model directory
/// layout, reading pickles without executing them.
public enum ModelConversion {}
