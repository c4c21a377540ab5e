"""The sandbox image: its build and the kernel that runs inside it."""
