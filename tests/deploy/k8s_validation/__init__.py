"""Offline validation of everything Rooivalk deploys: renders, strict schemas, cross-references, security.

Each check is a plain function that takes parsed documents and returns a list of violations (strings that
name the document, the path and what is wrong), so the tests can assert both that the real renders have
none and that a fixture with one planted mistake is caught.
"""
