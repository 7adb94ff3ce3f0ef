"""Generated gRPC code (make proto); never edit by hand."""
