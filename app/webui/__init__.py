"""app/webui"""
