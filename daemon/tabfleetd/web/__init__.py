"""Opt-in HTTP: the web server (webserver), its token and sign-in links (webauth), the dashboard
(dashboard, dashboard_page) and the Prometheus metrics (metrics). May import every layer up to control.
"""
