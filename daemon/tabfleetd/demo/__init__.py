"""The bundled demo site: its aiohttp server (demosite), its pages (demopage) and its images (demoimage).
Stands alone: may import only the package root.
"""
