// custom handler (not supported by this version)
