"""(being built: see the service issue)"""
