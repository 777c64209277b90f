from cofferd.main import main

raise SystemExit(main())
