from cwndproxy.cli import entry

entry()
