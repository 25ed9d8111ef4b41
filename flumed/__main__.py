from flumed.cli import main

raise SystemExit(main())
