from cwndproxy.cli import main

raise SystemExit(main())
